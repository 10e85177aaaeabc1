//! The building blocks of every component's configuration: sizes and durations written the way
//! Fluentd users write them ([`units`]), the helpers that read one component from the merged
//! figment by its `type` ([`component`]), the "did you mean" of their error messages
//! ([`suggest`]), and the `${VAR}` references in config strings ([`interpolate`]), shared by
//! the TOML loader and the fluent.conf reader.
//!
//! A leaf: it imports nothing from the rest of the crate, so that the components (sources,
//! filters, outputs, buffers) can use it and the loader in [`crate::config`] can sit above them
//! all.

pub mod component;
pub mod interpolate;
pub mod secret_url;
pub mod suggest;
pub mod units;

pub use component::TypeTag;
pub use secret_url::SecretUrl;
pub use units::{ByteSize, ConfigDuration};
