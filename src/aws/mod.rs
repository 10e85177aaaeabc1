//! AWS plumbing shared by AWS outputs: credentials (static, SDK default chain, and STS-based
//! with a scheduled refresh) and the HTTP client (extra CA bundle, proxy).

pub mod credentials;
pub mod http;
