//! [`ClientError`]: everything that can go wrong between a [`crate::client::Client`] call and
//! the server's answer.

use thiserror::Error;
use warren_protocol::{DecodeError, ErrorCode};

/// Code carried by [`ClientError::Closed`] when the connection ended without a server-given
/// code (end of stream, I/O error, the client dropped).
pub const NO_CLOSE_CODE: u16 = 0;

/// An error from the client library.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Connecting, reading or writing the socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The server sent bytes that do not decode as a frame, or a frame this client would
    /// have to send and cannot (a publish larger than the negotiated maximum).
    ///
    /// Not marked as the error's source so that `{:#}` does not print the text twice.
    #[error("protocol error: {0}")]
    Protocol(DecodeError),
    /// The server refused the request: an `Error` frame carrying the request's id.
    #[error("{}", describe_code(*code, message))]
    Server {
        /// [`ErrorCode`] as a number.
        code: u16,
        /// The server's explanation.
        message: String,
    },
    /// The connection is closed, so the request was not (or may not have been) answered.
    ///
    /// `code` and `reason` are the server's when it closed the connection (`Close`, or an
    /// `Error` with request id 0); otherwise `code` is [`NO_CLOSE_CODE`] and `reason` says
    /// what happened locally.
    #[error("connection closed: {}", describe_close(*code, reason))]
    Closed {
        /// [`ErrorCode`] as a number, or [`NO_CLOSE_CODE`].
        code: u16,
        /// Why the connection ended.
        reason: String,
    },
    /// The connection opened but the handshake did not complete (wrong version, no `Hello`).
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// Something answered at the address, but not with the Warren protocol: an HTTP or AMQP
    /// server, say. `answer` says what it looked like.
    #[error("{addr} {answer}")]
    NotWarren {
        /// The address connected to.
        addr: String,
        /// `answered with HTTP, not the Warren protocol`, or `did not answer with the Warren
        /// protocol handshake`.
        answer: String,
    },
    /// A publish larger than the server accepts (its max frame size, from `Hello`, less the
    /// publish headroom); nothing was sent.
    #[error("{}", crate::error::too_large_message(*body, *frame, *limit))]
    BodyTooLarge {
        /// The message body's size in bytes.
        body: usize,
        /// The publish frame's size in bytes.
        frame: usize,
        /// The largest publish frame the server accepts.
        limit: usize,
    },
    /// The server answered a request with a frame of the wrong type.
    #[error("unexpected reply from the server: expected {expected}, got {got}")]
    UnexpectedReply {
        /// The frame type(s) the request expects.
        expected: &'static str,
        /// The frame type that arrived.
        got: &'static str,
    },
    /// The TLS configuration cannot be built (a CA or client certificate file that cannot be
    /// read, a bad server name); names the file.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The TLS handshake failed: the server's certificate is not trusted or not for the
    /// server name, the server refused ours, or the port does not speak TLS.
    #[error("TLS with {addr} (server name '{server_name}') failed: {reason}")]
    TlsHandshake {
        /// The address connected to.
        addr: String,
        /// The name the server's certificate was checked against.
        server_name: String,
        /// rustls's reason, with a hint at the usual cause.
        reason: String,
    },
    /// An admin reply was not valid JSON, or not the shape of its type in
    /// [`crate::admin_types`] (a field missing or of the wrong type). Names the command.
    #[error("the server's admin reply is not what this client expects: {0}")]
    BadAdminReply(String),
}

impl From<DecodeError> for ClientError {
    fn from(e: DecodeError) -> Self {
        ClientError::Protocol(e)
    }
}

impl ClientError {
    /// The numeric error code when the server gave one (`Server`, or `Closed` by the server).
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            ClientError::Closed { code, .. } if *code != NO_CLOSE_CODE => Some(*code),
            _ => None,
        }
    }

    /// The [`ErrorCode`] the server gave, if it is one this protocol version defines.
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.code().and_then(ErrorCode::from_u16)
    }
}

/// The error for a peer at `addr` whose first bytes, `first`, are not a Warren `Hello`:
/// names the protocol it recognises (HTTP, AMQP) instead of reporting a frame length read
/// from someone else's text.
pub(crate) fn not_warren(addr: &str, first: &[u8]) -> ClientError {
    let answer = if first.starts_with(b"HTTP/") {
        "answered with HTTP, not the Warren protocol".to_owned()
    } else if first.starts_with(b"AMQP") {
        "answered with AMQP, not the Warren protocol".to_owned()
    } else if is_tls_record(first) {
        "answered with TLS, not the plain Warren protocol: is it a TLS port? try --tls".to_owned()
    } else {
        "did not answer with the Warren protocol handshake".to_owned()
    };
    ClientError::NotWarren {
        addr: addr.to_owned(),
        answer,
    }
}

/// Whether an I/O error from a TLS stream is rustls's (a certificate refused, an alert, bytes
/// that are not TLS) rather than the socket's.
pub(crate) fn is_tls(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
}

/// The error for a TLS handshake with `addr`, checking the name `server_name`, that failed
/// with `e`: rustls's reason and, where the cause is the usual one, what to do about it.
pub(crate) fn tls_failure(addr: &str, server_name: &str, e: std::io::Error) -> ClientError {
    use rustls::{AlertDescription, CertificateError, Error};
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<Error>()) else {
        return ClientError::Io(e);
    };
    let hint = match tls {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "; the server's certificate is not signed by a trusted CA (is --ca the CA that \
             signed it?)"
                .to_owned()
        }
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "; the server's certificate is not for '{server_name}' (--server-name sets the \
             name to check)"
        ),
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => {
            "; the server did not answer with TLS: is it a plain port? try without --tls".to_owned()
        }
        Error::AlertReceived(AlertDescription::CertificateRequired) => {
            "; the server requires a client certificate: pass --client-cert and --client-key"
                .to_owned()
        }
        Error::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::AccessDenied,
        ) => "; the server refused the client certificate".to_owned(),
        _ => String::new(),
    };
    ClientError::TlsHandshake {
        addr: addr.to_owned(),
        server_name: server_name.to_owned(),
        reason: format!("{tls}{hint}"),
    }
}

/// Whether `first` starts like a TLS record (an alert or a handshake, version 3.x), which
/// is what a TLS server sends to a client that spoke to it in plain text.
fn is_tls_record(first: &[u8]) -> bool {
    matches!(first, [0x15 | 0x16, 0x03, 0x00..=0x04, ..])
}

/// `NOT_FOUND (404): no queue 'x'`; codes this version does not know print as `UNKNOWN`.
/// A message that only repeats the code's name (a `Return` carries `NO_ROUTE` as its reply
/// text, AMQP style) or is empty is left out, so the line does not say the same word twice.
pub(crate) fn describe_code(code: u16, message: &str) -> String {
    let name = ErrorCode::from_u16(code).map_or("UNKNOWN", ErrorCode::name);
    let message = message.trim();
    if message.is_empty() || message.eq_ignore_ascii_case(name) {
        format!("{name} ({code})")
    } else {
        format!("{name} ({code}): {message}")
    }
}

fn describe_close(code: u16, reason: &str) -> String {
    if code == NO_CLOSE_CODE {
        reason.to_owned()
    } else {
        describe_code(code, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_read_like_amqp_replies() {
        let e = ClientError::Server {
            code: 404,
            message: "no queue 'x'".into(),
        };
        assert_eq!(e.to_string(), "NOT_FOUND (404): no queue 'x'");
        assert_eq!(e.error_code(), Some(ErrorCode::NotFound));
    }

    #[test]
    fn a_message_that_only_repeats_the_code_name_is_left_out() {
        assert_eq!(describe_code(312, "NO_ROUTE"), "NO_ROUTE (312)");
        assert_eq!(describe_code(312, ""), "NO_ROUTE (312)");
        assert_eq!(
            describe_code(312, "no route for 'x'"),
            "NO_ROUTE (312): no route for 'x'"
        );
    }

    #[test]
    fn unknown_codes_still_print_their_number() {
        let e = ClientError::Server {
            code: 999,
            message: "what".into(),
        };
        assert_eq!(e.to_string(), "UNKNOWN (999): what");
        assert_eq!(e.code(), Some(999));
        assert_eq!(e.error_code(), None);
    }

    #[test]
    fn closed_shows_the_server_code_only_when_there_is_one() {
        let by_server = ClientError::Closed {
            code: 320,
            reason: "shutting down".into(),
        };
        assert_eq!(
            by_server.to_string(),
            "connection closed: CONNECTION_FORCED (320): shutting down"
        );
        let local = ClientError::Closed {
            code: NO_CLOSE_CODE,
            reason: "the server closed the connection".into(),
        };
        assert_eq!(
            local.to_string(),
            "connection closed: the server closed the connection"
        );
        assert_eq!(local.code(), None);
    }

    #[test]
    fn other_protocols_are_recognised_by_their_first_bytes() {
        let addr = "127.0.0.1:5711";
        assert_eq!(
            not_warren(addr, b"HTTP/1.1 400 Bad Request\r\n").to_string(),
            "127.0.0.1:5711 answered with HTTP, not the Warren protocol"
        );
        assert_eq!(
            not_warren(addr, b"AMQP\x00\x00\x09\x01").to_string(),
            "127.0.0.1:5711 answered with AMQP, not the Warren protocol"
        );
        assert_eq!(
            not_warren(addr, b"SSH-2.0-OpenSSH").to_string(),
            "127.0.0.1:5711 did not answer with the Warren protocol handshake"
        );
        // A TLS server's alert (fatal, decode_error) for a plain client's preface.
        assert_eq!(
            not_warren(addr, b"\x15\x03\x03\x00\x02\x02\x32").to_string(),
            "127.0.0.1:5711 answered with TLS, not the plain Warren protocol: is it a TLS \
             port? try --tls"
        );
        assert_eq!(
            not_warren(addr, b"HTT").to_string(),
            "127.0.0.1:5711 did not answer with the Warren protocol handshake"
        );
    }

    #[test]
    fn io_errors_are_transparent_so_context_chains_do_not_repeat() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = ClientError::from(io);
        assert_eq!(e.to_string(), "refused");
        assert!(std::error::Error::source(&e).is_none());
        let p = ClientError::from(DecodeError::UnknownOpcode(0xff));
        assert_eq!(p.to_string(), "protocol error: unknown opcode 0xff");
        assert!(std::error::Error::source(&p).is_none());
    }
}
