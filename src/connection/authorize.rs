//! Permission checks on client requests (docs/access-control.md): RabbitMQ's configure /
//! write / read, against the patterns compiled for the connection at `Open`.
//!
//! Both front doors check here: the AMQP listener builds the native request a method
//! stands for and asks the same question, so there is one permission rule, not two.
//!
//! The publish check is on the hot path, so it is answered once per exchange per connection
//! and remembered in [`PublishGrants`], which the read loop owns: no lock, no regex per
//! message, and nothing at all when the write pattern is `.*`.

use std::collections::HashMap;

use warren_protocol::Frame;

use crate::broker::access::{Perm, Principal};
use crate::error::BrokerError;

/// Exchanges a connection may remember answers for; past this the memory starts over (a
/// client publishing to ever new exchange names pays a regex match each, nothing more).
const MAX_REMEMBERED_EXCHANGES: usize = 1024;

/// The publish permission answers of one connection, by exchange.
#[derive(Debug, Default)]
pub(crate) struct PublishGrants {
    answers: HashMap<String, bool>,
}

impl PublishGrants {
    /// Checks write permission on `exchange`, from memory when it has been asked before.
    fn check(&mut self, user: &Principal, exchange: &str) -> Result<(), BrokerError> {
        if user.grants.allows_all(Perm::Write) {
            return Ok(());
        }
        let allowed = match self.answers.get(exchange) {
            Some(allowed) => *allowed,
            None => {
                let allowed = user.check(Perm::Write, "exchange", exchange).is_ok();
                if self.answers.len() >= MAX_REMEMBERED_EXCHANGES {
                    self.answers.clear();
                }
                self.answers.insert(exchange.to_owned(), allowed);
                allowed
            }
        };
        if allowed {
            Ok(())
        } else {
            // The refusal's words are built only when refusing.
            user.check(Perm::Write, "exchange", exchange)
        }
    }
}

/// Checks that `user` may make the request `frame`, before the broker sees it. Frames that
/// need no permission (acks, qos, cancel, heartbeats, close) pass; so does a queue declare
/// with an empty name, whose server-chosen name the broker checks once it has chosen it.
///
/// # Errors
/// [`BrokerError::AccessRefused`] naming the resource, the virtual host, the user and the
/// permission it lacks; the connection goes on.
pub(crate) fn authorize(
    user: &Principal,
    frame: &Frame,
    publish: &mut PublishGrants,
) -> Result<(), BrokerError> {
    match frame {
        Frame::Publish(p) => publish.check(user, &p.exchange),
        Frame::ExchangeDeclare(d) if !d.passive => user.check(Perm::Configure, "exchange", &d.name),
        Frame::ExchangeDelete(d) => user.check(Perm::Configure, "exchange", &d.name),
        // As RabbitMQ: write on the destination, read on the source.
        Frame::ExchangeBind(b) | Frame::ExchangeUnbind(b) => {
            user.check(Perm::Write, "exchange", &b.destination)?;
            user.check(Perm::Read, "exchange", &b.source)
        }
        Frame::QueueDeclare(d) if !d.passive && !d.name.is_empty() => {
            user.check(Perm::Configure, "queue", &d.name)
        }
        Frame::QueueDelete(d) => user.check(Perm::Configure, "queue", &d.name),
        Frame::QueuePurge { name } => user.check(Perm::Read, "queue", name),
        Frame::QueueBind(b) | Frame::QueueUnbind(b) => {
            user.check(Perm::Write, "queue", &b.queue)?;
            user.check(Perm::Read, "exchange", &b.exchange)
        }
        Frame::Consume(c) => user.check(Perm::Read, "queue", &c.queue),
        Frame::Get(g) => user.check(Perm::Read, "queue", &g.queue),
        _ => Ok(()),
    }
}
