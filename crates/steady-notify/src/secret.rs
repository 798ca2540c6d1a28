//! Keys read from the environment or a file, kept out of `Debug` and logs.

use std::fmt;

use crate::error::NotifyError;

/// A key that is never printed.
#[derive(Clone)]
pub(crate) struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// The key itself, for building a request.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads the key from `env` or `file` (exactly one is set) for notifier `notifier`.
    pub fn load(
        notifier: &str,
        field: &'static str,
        env: Option<&str>,
        file: Option<&str>,
    ) -> Result<Secret, NotifyError> {
        let (raw, what) = match (env, file) {
            (Some(var), _) => {
                let value = std::env::var(var).map_err(|_| NotifyError::MissingEnv {
                    notifier: notifier.to_string(),
                    var: var.to_string(),
                })?;
                (value, format!("environment variable `{var}`"))
            }
            (None, Some(path)) => {
                let value =
                    std::fs::read_to_string(path).map_err(|source| NotifyError::KeyFile {
                        notifier: notifier.to_string(),
                        path: path.into(),
                        source,
                    })?;
                (value, format!("key file `{path}`"))
            }
            (None, None) => {
                return Err(NotifyError::NoKey {
                    notifier: notifier.to_string(),
                    field,
                })
            }
        };
        // Files usually end in a newline; keys never contain whitespace.
        let key = raw.trim();
        if key.is_empty() {
            return Err(NotifyError::EmptyKey {
                notifier: notifier.to_string(),
                what,
            });
        }
        if key.chars().any(|c| c.is_control()) {
            return Err(NotifyError::BadKey {
                notifier: notifier.to_string(),
                what,
            });
        }
        Ok(Secret(key.to_string()))
    }
}
