//! The figment providers that expand `${VAR}` references (the rules are in
//! [`crate::primitives::interpolate`]) in every string of a config file, keeping the file's
//! metadata so errors still name it.

// figment::Error is large, but this runs once at startup.
#![allow(clippy::result_large_err)]

use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider};

use crate::primitives::interpolate::expand_with;

/// A figment provider that expands `${VAR}` in every string of the provider it wraps, keeping
/// that provider's metadata so errors still name the file.
pub struct Interpolated<P>(pub P);

/// Like [`Interpolated`], except that in the credentials sections of outputs
/// (`[outputs.NAME.credentials]`) a reference to an unset variable is kept as written
/// (`"${AWS_ROLE_ARN}"`) instead of being an error: `check --no-credentials` validates a
/// production config on a machine without the pod's credentials.
pub struct InterpolatedExceptCredentials<P>(pub P);

/// Whether a key path lies in the credentials section of an output.
fn in_credentials(path: &[String]) -> bool {
    matches!(path, [outputs, _, credentials, ..] if outputs == "outputs" && credentials == "credentials")
}

fn walk(value: &mut Value, path: &mut Vec<String>, keep_unset: bool) -> Result<(), Error> {
    match value {
        Value::String(_, s) => {
            let keep = keep_unset && in_credentials(path);
            let lookup = |name: &str| {
                std::env::var(name)
                    .ok()
                    .or_else(|| keep.then(|| format!("${{{name}}}")))
            };
            *s = expand_with(s, lookup).map_err(|e| {
                let mut err = Error::from(e.to_string());
                err.path = path.clone();
                err
            })?;
        }
        Value::Dict(_, dict) => walk_dict(dict, path, keep_unset)?,
        Value::Array(_, items) => {
            for (i, v) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                walk(v, path, keep_unset)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

fn walk_dict(dict: &mut Dict, path: &mut Vec<String>, keep_unset: bool) -> Result<(), Error> {
    for (k, v) in dict.iter_mut() {
        path.push(k.clone());
        walk(v, path, keep_unset)?;
        path.pop();
    }
    Ok(())
}

/// The data of `provider` with references expanded.
fn expanded<P: Provider>(provider: &P, keep_unset: bool) -> Result<Map<Profile, Dict>, Error> {
    let mut data = provider.data()?;
    for dict in data.values_mut() {
        walk_dict(dict, &mut Vec::new(), keep_unset).map_err(|mut e| {
            e.metadata = Some(provider.metadata());
            e
        })?;
    }
    Ok(data)
}

impl<P: Provider> Provider for Interpolated<P> {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        expanded(&self.0, false)
    }

    fn profile(&self) -> Option<Profile> {
        self.0.profile()
    }
}

impl<P: Provider> Provider for InterpolatedExceptCredentials<P> {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        expanded(&self.0, true)
    }

    fn profile(&self) -> Option<Profile> {
        self.0.profile()
    }
}
