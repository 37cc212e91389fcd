//! E-mail over SMTP (lettre): STARTTLS, implicit TLS or plain for local relays, optional
//! credentials. Subject and body are UTF-8 (Russian).

use super::{Notification, SendError};
use crate::alerts::config::SmtpTls;
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

pub(super) struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl Email {
    pub(super) fn new(
        host: &str,
        port: u16,
        tls: SmtpTls,
        from: &str,
        to: &[String],
        credentials: Option<(String, String)>,
        timeout: Duration,
    ) -> Result<Email, String> {
        let builder = match tls {
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .map_err(|e| e.to_string())?,
            SmtpTls::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(|e| e.to_string())?
            }
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
        };
        let mut builder = builder.port(port).timeout(Some(timeout));
        if let Some((u, p)) = credentials {
            builder = builder.credentials(Credentials::new(u, p));
        }
        let from: Mailbox = from.parse().map_err(|e| format!("from: {e}"))?;
        let to = to
            .iter()
            .map(|t| t.parse().map_err(|e| format!("to {t:?}: {e}")))
            .collect::<Result<Vec<Mailbox>, String>>()?;
        Ok(Email {
            transport: builder.build(),
            from,
            to,
        })
    }

    pub(super) async fn send(&mut self, n: &Notification) -> Result<(), SendError> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(n.subject.clone())
            .header(ContentType::TEXT_PLAIN);
        for t in &self.to {
            b = b.to(t.clone());
        }
        let msg = b
            .body(n.text.clone())
            .map_err(|e| SendError::Permanent(e.to_string()))?;
        match self.transport.send(msg).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(SendError::Permanent(e.to_string())),
            Err(e) => Err(SendError::Transient(e.to_string())),
        }
    }
}
