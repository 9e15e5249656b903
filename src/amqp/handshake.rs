//! The connection handshake: `start` / `start-ok` (SASL PLAIN, AMQPLAIN), `tune` /
//! `tune-ok`, `open`.

use super::*;

impl Conn<'_> {
    /// `start` to `open-ok`. `Ok(None)`: the client closed the connection meanwhile.
    pub(super) async fn handshake(
        &mut self,
        deadline: Instant,
    ) -> Result<Option<Arc<Principal>>, Step> {
        self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Start(start())),
        );
        let Some(start_ok) = self.expect(deadline, "connection.start-ok").await? else {
            return Ok(None);
        };
        let AMQPClass::Connection(connection::AMQPMethod::StartOk(start_ok)) = start_ok else {
            return Err(unexpected("connection.start-ok", &start_ok));
        };
        let user = self.login(&start_ok).await?;
        self.blocked_capable = capability(&start_ok.client_properties, "connection.blocked");
        self.cancel_notify = capability(&start_ok.client_properties, "consumer_cancel_notify");
        self.client.product = client_property(&start_ok.client_properties, "product");
        self.client.version = client_property(&start_ok.client_properties, "version");
        self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Tune(connection::Tune {
                channel_max: CHANNEL_MAX,
                frame_max: FRAME_MAX,
                heartbeat: self.heartbeat_secs,
            })),
        );
        let Some(tune_ok) = self.expect(deadline, "connection.tune-ok").await? else {
            return Ok(None);
        };
        let AMQPClass::Connection(connection::AMQPMethod::TuneOk(tune_ok)) = tune_ok else {
            return Err(unexpected("connection.tune-ok", &tune_ok));
        };
        self.tune(&tune_ok)?;
        let Some(open) = self.expect(deadline, "connection.open").await? else {
            return Ok(None);
        };
        let AMQPClass::Connection(connection::AMQPMethod::Open(open)) = open else {
            return Err(unexpected("connection.open", &open));
        };
        let vhost = open.virtual_host.as_str();
        let principal = match self.broker.enter_vhost(&user, vhost) {
            Ok(p) => p,
            Err(BrokerError::NotFound { .. }) => {
                return Err(Step::Close(
                    ConnError::new(Reply::NotAllowed, format!("vhost {vhost} not found"))
                        .on(10, 40),
                ))
            }
            Err(e) => {
                tracing::info!(peer = %self.peer, %user, vhost, reason = %e, "AMQP connection.open refused");
                return Err(Step::Close(
                    ConnError::new(
                        Reply::NotAllowed,
                        format!("access to vhost '{vhost}' refused for user '{user}'"),
                    )
                    .on(10, 40),
                ));
            }
        };
        self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
        );
        Ok(Some(principal))
    }

    /// Checks `start-ok`'s credentials; returns the user name.
    pub(super) async fn login(&mut self, start_ok: &connection::StartOk) -> Result<String, Step> {
        let mechanism = start_ok.mechanism.as_str();
        let credentials = match mechanism {
            "PLAIN" => plain_credentials(start_ok.response.as_bytes()),
            "AMQPLAIN" => amqplain_credentials(start_ok.response.as_bytes()),
            other => {
                return Err(Step::Close(
                    ConnError::new(
                        Reply::CommandInvalid,
                        format!(
                            "unknown authentication mechanism '{other}' (offered: {MECHANISMS})"
                        ),
                    )
                    .on(10, 11),
                ))
            }
        };
        let refused = |detail: &str| {
            Step::Close(
                ConnError::new(
                    Reply::AccessRefused,
                    format!(
                        "Login was refused using authentication mechanism {mechanism}: {detail}"
                    ),
                )
                .on(10, 11),
            )
        };
        let Some((user, password)) = credentials else {
            return Err(refused(
                "the response is not a valid one for this mechanism",
            ));
        };
        match self.broker.login(&user, &password, self.peer_ip).await {
            Ok(name) => Ok(name),
            Err(BrokerError::AccessRefused(reason)) => {
                tracing::info!(peer = %self.peer, %user, %reason, "AMQP login refused");
                Err(refused(if reason == AUTH_FAILED {
                    AUTH_FAILED
                } else {
                    &reason
                }))
            }
            Err(e) => {
                tracing::warn!(peer = %self.peer, %user, error = %e, "AMQP login failed");
                Err(Step::Close(
                    ConnError::new(Reply::InternalError, e.to_string()).on(10, 11),
                ))
            }
        }
    }

    /// Applies `tune-ok` by RabbitMQ's rules: 0 means the server's limit; more than the
    /// server offered, or a frame_max under the spec's minimum, is refused.
    pub(super) fn tune(&mut self, tune_ok: &connection::TuneOk) -> Result<(), Step> {
        let refuse = |text: String| {
            Err(Step::Close(
                ConnError::new(Reply::NotAllowed, text).on(10, 31),
            ))
        };
        let frame_max = match tune_ok.frame_max {
            0 => FRAME_MAX,
            f if f < codec::FRAME_MIN_SIZE => {
                return refuse(format!(
                    "frame_max={f} < {} min size",
                    codec::FRAME_MIN_SIZE
                ))
            }
            f if f > FRAME_MAX => return refuse(format!("frame_max={f} > {FRAME_MAX} max size")),
            f => f,
        };
        self.channel_max = match tune_ok.channel_max {
            0 => CHANNEL_MAX,
            c if c > CHANNEL_MAX => {
                return refuse(format!("channel_max={c} > {CHANNEL_MAX} max"));
            }
            c => c,
        };
        self.frames.max_frame = frame_max;
        // The client's word decides (RabbitMQ takes tune-ok's value as it is); 0 is off.
        if tune_ok.heartbeat > 0 {
            let interval = Duration::from_secs(u64::from(tune_ok.heartbeat));
            self.frames.silence = Some(interval * MISSED_HEARTBEATS);
            let _ = self.out.send(Out::Heartbeat(interval));
        }
        Ok(())
    }
}

/// `connection.start`: RabbitMQ's server properties, with the capabilities Warren's AMQP
/// listener will have once its later slices land (clients read them to choose features).
pub(super) fn start() -> connection::Start {
    let mut capabilities = FieldTable::default();
    for name in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
    ] {
        capabilities.insert(short_string(name), AMQPValue::Boolean(true));
    }
    let mut props = FieldTable::default();
    let text = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()));
    props.insert(short_string("product"), text("Warren"));
    props.insert(short_string("version"), text(env!("CARGO_PKG_VERSION")));
    props.insert(short_string("platform"), text("Rust"));
    props.insert(
        short_string("information"),
        text("Warren's AMQP 0-9-1 listener; see docs/amqp.md"),
    );
    props.insert(
        short_string("capabilities"),
        AMQPValue::FieldTable(capabilities),
    );
    connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: props,
        mechanisms: LongString::from(MECHANISMS.as_bytes().to_vec()),
        locales: LongString::from(b"en_US".to_vec()),
    }
}

/// Whether the client's properties list `name` as a capability set to true.
pub(super) fn capability(client_properties: &FieldTable, name: &str) -> bool {
    match client_properties.inner().get("capabilities") {
        Some(AMQPValue::FieldTable(caps)) => {
            matches!(caps.inner().get(name), Some(AMQPValue::Boolean(true)))
        }
        _ => false,
    }
}

/// The longest client product or version kept for listings; the rest is cut.
const MAX_CLIENT_PROPERTY_CHARS: usize = 64;

/// A text entry of the client's properties (`product`, `version`) for `connection list`:
/// cut to [`MAX_CLIENT_PROPERTY_CHARS`] and without control characters, since the client
/// chose it and an operator's terminal shows it. `None` when absent, empty or not text.
pub(super) fn client_property(client_properties: &FieldTable, name: &str) -> Option<String> {
    let bytes = match client_properties.inner().get(name)? {
        AMQPValue::LongString(s) => s.as_bytes(),
        AMQPValue::ShortString(s) => s.as_str().as_bytes(),
        _ => return None,
    };
    let text: String = String::from_utf8_lossy(bytes)
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_CLIENT_PROPERTY_CHARS)
        .collect();
    (!text.is_empty()).then_some(text)
}

/// SASL PLAIN: `authzid NUL user NUL password` (the authorisation id is ignored, as
/// RabbitMQ does).
pub(super) fn plain_credentials(response: &[u8]) -> Option<(String, Vec<u8>)> {
    let mut parts = response.splitn(3, |b| *b == 0);
    let _authzid = parts.next()?;
    let user = std::str::from_utf8(parts.next()?).ok()?;
    let password = parts.next()?;
    Some((user.to_owned(), password.to_vec()))
}

/// AMQPLAIN: a field table without its length prefix, holding LOGIN and PASSWORD.
#[allow(clippy::big_endian_bytes)] // AMQP's byte order
pub(super) fn amqplain_credentials(response: &[u8]) -> Option<(String, Vec<u8>)> {
    let len = u32::try_from(response.len()).ok()?;
    let mut table = len.to_be_bytes().to_vec();
    table.extend_from_slice(response);
    if !codec::table_nesting_ok(&table, codec::MAX_TABLE_DEPTH) {
        return None;
    }
    let (_, table) = amq_protocol::types::parsing::parse_field_table(table.as_slice()).ok()?;
    let text = |key: &str| match table.inner().get(key)? {
        AMQPValue::LongString(s) => Some(s.as_bytes().to_vec()),
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes().to_vec()),
        _ => None,
    };
    let user = String::from_utf8(text("LOGIN")?).ok()?;
    Some((user, text("PASSWORD")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_takes_user_and_password_and_ignores_the_authorisation_id() {
        assert_eq!(
            plain_credentials(b"\0guest\0gu\0est"),
            Some(("guest".to_owned(), b"gu\0est".to_vec()))
        );
        assert_eq!(
            plain_credentials(b"admin\0guest\0pw"),
            Some(("guest".to_owned(), b"pw".to_vec()))
        );
        assert_eq!(plain_credentials(b"guest"), None);
    }

    #[test]
    fn amqplain_reads_login_and_password_from_its_table() {
        let mut table = FieldTable::default();
        table.insert(
            short_string("LOGIN"),
            AMQPValue::LongString(LongString::from(b"guest".to_vec())),
        );
        table.insert(
            short_string("PASSWORD"),
            AMQPValue::LongString(LongString::from(b"secret".to_vec())),
        );
        let encoded = amq_protocol::types::generation::gen_field_table(&table)(
            amq_protocol::frame::WriteContext::from(Vec::new()),
        )
        .expect("encoded")
        .write;
        // Without the table's own length prefix, as AMQPLAIN sends it.
        assert_eq!(
            amqplain_credentials(&encoded[4..]),
            Some(("guest".to_owned(), b"secret".to_vec()))
        );
        assert_eq!(amqplain_credentials(b"\x05LOGIN"), None);
    }
}
