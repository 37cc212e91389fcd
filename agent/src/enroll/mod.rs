//! Enrollment: trading a one-time token from the region's administrators for this host's own
//! identity (МО, host id, secret), kept in `identity.json`. An enrolled agent signs everything
//! it publishes and only believes acks signed for it, so a clinic PC cannot speak for another
//! host nor make this one drop unsent data.
//!
//! Enrollment happens at start, before the publisher: without an identity file and with a
//! token, the agent retries (capped exponential backoff) until the collector accepts the token
//! or a stop is requested. The token is never logged.

pub mod identity;

use std::time::Duration;

use dozor_proto::auth::Secret;
use dozor_proto::{Role, valid_id};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use identity::{Credentials, IdentityError};

use crate::config::Config;
use crate::publish::mqtt::Backoff;
use crate::tls::TlsClient;
use crate::{os, wall_ms};

/// First retry delay after a failed enrollment.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Longest delay between enrollment attempts (an administrator may be fixing the token).
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// Path of the enrollment call under `enroll.url`.
pub const PATH: &str = "api/v1/enroll";
/// One attempt, connection and response included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body read.
const MAX_RESPONSE: usize = 16 * 1024;

/// Why enrollment cannot even be attempted, or its result not kept.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The identity file is unusable or cannot be written.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The HTTP client could not be built.
    #[error("enrollment client: {0}")]
    Client(String),
}

/// How the agent identifies itself on this run.
#[derive(Debug)]
pub enum Obtained {
    /// Enrolled: from `identity.json`, or just now.
    Enrolled(Credentials),
    /// No identity and no token: unsigned, with the configured МО and host id.
    NotEnrolled,
    /// A stop was requested while enrolling.
    Stopped,
}

/// The request body of `POST {url}/api/v1/enroll`.
#[derive(Debug, Clone, Serialize)]
pub struct Request {
    pub token: String,
    /// The host id the agent would use without enrollment.
    pub host_hint: String,
    pub hostname: String,
    pub machine_id: Option<String>,
    pub role: Role,
}

/// The 200 response.
#[derive(Debug, Deserialize)]
struct Issued {
    mo: String,
    host: String,
    secret: String,
    mqtt_username: String,
}

/// A 4xx/5xx response: a code (`token_invalid`, `bad_request`, `rate_limited`) and a message
/// in Russian for the administrator.
#[derive(Debug, Deserialize)]
struct Refusal {
    error: String,
    #[serde(default)]
    message: String,
}

/// Why one attempt failed; all are retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttemptError {
    /// The collector answered with an error code.
    #[error("enrollment refused: HTTP {status} {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    /// No usable answer (network, TLS, an unexpected response).
    #[error("enrollment failed: {0}")]
    Failed(String),
}

/// Loads the identity or, with a token, enrolls (retrying until success or `stop`).
pub async fn obtain(
    config: &Config,
    backoff: Backoff,
    stop: &CancellationToken,
) -> Result<Obtained, EnrollError> {
    let dir = config.data_dir.clone();
    if let Some(c) = identity::load(&dir)? {
        if config.enroll.token.is_some() {
            tracing::info!("already enrolled (identity.json); the enrollment token is not used");
        }
        return Ok(Obtained::Enrolled(c));
    }
    let Some(token) = &config.enroll.token else {
        return Ok(Obtained::NotEnrolled);
    };
    let request = Request {
        token: token.expose().to_owned(),
        host_hint: config.host_id.clone(),
        hostname: os::hostname().unwrap_or_default(),
        machine_id: os::machine_id(),
        role: config.role,
    };
    let enroller = Enroller::new(&config.enroll.url, config.tls.as_ref(), request)?;
    if config.enroll.url.scheme() == "http" {
        tracing::warn!(
            url = %config.enroll.url,
            "ENROLLING OVER PLAIN HTTP (enroll.allow_plain_http): the token and the issued \
             secret cross the network unencrypted; use this in a lab only"
        );
    }
    let Some(c) = enroller.run(backoff, stop).await else {
        return Ok(Obtained::Stopped);
    };
    identity::save(&dir, &c)?;
    tracing::info!(mo = %c.mo, host = %c.host, "enrolled; identity saved");
    Ok(Obtained::Enrolled(c))
}

/// Makes enrollment attempts against one endpoint.
pub struct Enroller {
    client: reqwest::Client,
    endpoint: Url,
    request: Request,
}

impl Enroller {
    /// `tls` is required for an `https` URL (configuration validation builds it).
    pub fn new(
        base: &Url,
        tls: Option<&TlsClient>,
        request: Request,
    ) -> Result<Enroller, EnrollError> {
        let endpoint = endpoint(base).map_err(EnrollError::Client)?;
        let mut b = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            // A redirect would carry the token to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("dozor-agent/", env!("CARGO_PKG_VERSION")));
        if endpoint.scheme() == "https" {
            let Some(tls) = tls else {
                return Err(EnrollError::Client(
                    "https enrollment without a TLS configuration".into(),
                ));
            };
            b = b.tls_backend_preconfigured((*tls.0).clone());
        }
        let client = b.build().map_err(|e| EnrollError::Client(e.to_string()))?;
        Ok(Enroller {
            client,
            endpoint,
            request,
        })
    }

    /// Retries [`Enroller::attempt`] with `backoff` until it succeeds (`Some`) or `stop`.
    pub async fn run(&self, mut backoff: Backoff, stop: &CancellationToken) -> Option<Credentials> {
        loop {
            let attempt = tokio::select! {
                _ = stop.cancelled() => return None,
                r = self.attempt() => r,
            };
            let retry_in = match attempt {
                Ok(c) => return Some(c),
                Err(e) => {
                    let retry_in = backoff.next_delay();
                    match &e {
                        AttemptError::Refused {
                            status,
                            code,
                            message,
                        } => tracing::error!(
                            status,
                            code = %code,
                            message = %message,
                            ?retry_in,
                            "enrollment refused by the collector; retrying (check the token)"
                        ),
                        AttemptError::Failed(why) => tracing::warn!(
                            error = %why,
                            ?retry_in,
                            url = %self.endpoint,
                            "enrollment failed; retrying"
                        ),
                    }
                    retry_in
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(retry_in) => {}
            }
        }
    }

    /// One enrollment request.
    pub async fn attempt(&self) -> Result<Credentials, AttemptError> {
        let fail = |e: reqwest::Error| AttemptError::Failed(describe(&e));
        let resp = self
            .client
            .post(self.endpoint.clone())
            .json(&self.request)
            .send()
            .await
            .map_err(fail)?;
        let status = resp.status();
        let body = read_limited(resp).await.map_err(fail)?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<Refusal>(&body) {
                Ok(r) => AttemptError::Refused {
                    status: status.as_u16(),
                    code: r.error,
                    message: r.message,
                },
                Err(_) => AttemptError::Failed(format!("HTTP {status} without an error body")),
            });
        }
        let bad = |why: &str| AttemptError::Failed(format!("malformed enrollment response: {why}"));
        let issued: Issued = serde_json::from_slice(&body).map_err(|e| bad(&e.to_string()))?;
        if !valid_id(&issued.mo) || !valid_id(&issued.host) {
            return Err(bad("mo or host is not a valid id"));
        }
        let secret = Secret::from_hex(&issued.secret).ok_or_else(|| bad("secret"))?;
        if issued.mqtt_username != dozor_proto::username(&issued.mo, &issued.host) {
            return Err(bad("mqtt_username does not match mo/host"));
        }
        Ok(Credentials {
            mo: issued.mo,
            host: issued.host,
            secret,
            enrolled_at_ms: wall_ms(),
        })
    }
}

/// `{base}/api/v1/enroll`, keeping any path prefix of `base`.
pub fn endpoint(base: &Url) -> Result<Url, String> {
    let mut s = base.as_str().trim_end_matches('/').to_owned();
    s.push('/');
    s.push_str(PATH);
    Url::parse(&s).map_err(|e| format!("{s}: {e}"))
}

async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = MAX_RESPONSE.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    Ok(body)
}

/// reqwest's error with its causes (the TLS or connection reason is in the chain).
fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests;
