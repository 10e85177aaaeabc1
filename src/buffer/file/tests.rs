//! Behaviour of the file buffer, as a specification. Each test opens a real database in a
//! temporary directory; "restart" means dropping every handle and opening it again.
