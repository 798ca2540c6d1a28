//! Errors: [`NotifyError`] for setting notifiers up, [`AttemptError`] for one delivery.

use std::path::PathBuf;

/// Why [`Notifiers::from_config`](crate::Notifiers::from_config) refused a config.
///
/// Messages name the notifier and where a secret was looked for, never the secret.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The environment variable that should hold a key is unset or not UTF-8.
    #[error("notifier `{notifier}`: environment variable `{var}` is not set")]
    MissingEnv {
        /// The notifier's name.
        notifier: String,
        /// The variable.
        var: String,
    },
    /// The file that should hold a key could not be read.
    #[error("notifier `{notifier}`: cannot read key file `{}`: {source}", path.display())]
    KeyFile {
        /// The notifier's name.
        notifier: String,
        /// The file.
        path: PathBuf,
        /// What went wrong (an I/O error never carries file contents).
        source: std::io::Error,
    },
    /// A key's source held nothing but whitespace.
    #[error("notifier `{notifier}`: {what} is empty")]
    EmptyKey {
        /// The notifier's name.
        notifier: String,
        /// Where the key came from: "environment variable `X`" or "key file `/p`".
        what: String,
    },
    /// A key has characters that cannot go into a request (e.g. a newline inside it).
    #[error("notifier `{notifier}`: the key in {what} has characters not allowed in an HTTP header or JSON string")]
    BadKey {
        /// The notifier's name.
        notifier: String,
        /// Where the key came from.
        what: String,
    },
    /// A notifier config without a key source (config validation normally catches it).
    #[error("notifier `{notifier}`: needs `{field}_env` or `{field}_file`")]
    NoKey {
        /// The notifier's name.
        notifier: String,
        /// `routing_key` or `api_key`.
        field: &'static str,
    },
    /// The URL does not parse as an http(s) URI.
    #[error("notifier `{notifier}`: `{url}` is not a usable http(s) URL: {reason}")]
    BadUrl {
        /// The notifier's name.
        notifier: String,
        /// The URL as configured.
        url: String,
        /// Why.
        reason: String,
    },
    /// `alerts.page.notify` or `alerts.ticket.notify` names no notifier.
    #[error("alerts.{route}.notify: no notifier is named `{name}`")]
    UnknownNotifier {
        /// `page` or `ticket`.
        route: &'static str,
        /// The missing name.
        name: String,
    },
    /// An https notifier, but no trusted root certificates were found on this system.
    #[error("notifier `{notifier}`: no trusted root certificates found for https (install ca-certificates)")]
    NoRoots {
        /// The notifier's name.
        notifier: String,
    },
}

/// Why one delivery attempt failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AttemptError {
    /// Connecting or sending failed.
    #[error("request failed: {0}")]
    Request(String),
    /// No complete answer within the notifier's `timeout`.
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The receiver answered with a non-2xx status.
    #[error("receiver answered {status}: {excerpt}")]
    Status {
        /// The status.
        status: http::StatusCode,
        /// The start of the body, for the log.
        excerpt: String,
    },
}

impl AttemptError {
    /// Whether trying again may help: connect errors, timeouts, 5xx and 429 may; any
    /// other 4xx means the request itself is wrong.
    pub fn retryable(&self) -> bool {
        match self {
            AttemptError::Request(_) | AttemptError::Timeout(_) => true,
            AttemptError::Status { status, .. } => {
                status.is_server_error() || *status == http::StatusCode::TOO_MANY_REQUESTS
            }
        }
    }
}
