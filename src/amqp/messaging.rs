//! `basic.*` on a channel: qos, consume, get, ack/nack/reject, and publish content.

use super::*;

impl Conn<'_> {
    /// `basic.qos`: with `global=false` the prefetch of the channel's next consumers; with
    /// `global=true` one limit shared by all the channel's consumers, those already started
    /// included, as RabbitMQ does (docs/amqp.md). amq-protocol drops `prefetch_size`, which
    /// RabbitMQ refuses unless 0.
    pub(super) fn qos(
        &mut self,
        channel: u16,
        qos: &basic::Qos,
        session: &Arc<Session>,
    ) -> Result<(), Step> {
        if let Some(state) = self.channels.get_mut(&channel) {
            let count = u32::from(qos.prefetch_count);
            if !qos.global {
                state.prefetch = count;
            } else if let Some(shared) = &state.shared_credit {
                shared.set_limit(count);
            } else {
                let shared = crate::broker::consumer::SharedCredit::new(count);
                let ours: Vec<Arc<str>> = {
                    let live = self.live.lock();
                    live.consumers
                        .iter()
                        .filter(|(_, on)| **on == channel)
                        .map(|(tag, _)| tag.clone())
                        .collect()
                };
                for c in session.consumers() {
                    if ours.contains(&c.tag) {
                        c.share_credit(shared.clone());
                    }
                }
                state.shared_credit = Some(shared);
            }
        }
        self.send(
            channel,
            AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
        );
        Ok(())
    }

    /// `basic.consume`: a consumer on the broker, its deliveries numbered on this channel.
    pub(super) fn consume(
        &mut self,
        channel: u16,
        c: basic::Consume,
        session: &Arc<Session>,
    ) -> Result<(), Step> {
        let (generation, prefetch, shared_credit) = match self.channels.get(&channel) {
            Some(state) => (
                state.generation,
                state.prefetch,
                state.shared_credit.clone(),
            ),
            None => return Ok(()),
        };
        let tag: Arc<str> = if c.consumer_tag.as_str().is_empty() {
            self.next_ctag += 1;
            format!("amq.ctag-{}.{}", session.id, self.next_ctag).into()
        } else {
            c.consumer_tag.as_str().into()
        };
        {
            let mut shared = self.live.lock();
            if shared.consumers.contains_key(&tag) {
                drop(shared);
                return Err(Step::Close(
                    ConnError::new(
                        Reply::NotAllowed,
                        format!("attempt to reuse consumer tag '{tag}'"),
                    )
                    .on(60, 20),
                ));
            }
            // Before the broker has it, so its first delivery finds its channel.
            shared.consumers.insert(tag.clone(), channel);
        }
        let native = warren_protocol::Consume {
            queue: c.queue.to_string(),
            consumer_tag: tag.to_string(),
            no_ack: c.no_ack,
            exclusive: c.exclusive,
            arguments: topology::table(&c.arguments),
        };
        let frame = Frame::Consume(native);
        let result = authorize(&session.user, &frame, &mut self.grants).and_then(|()| {
            let Frame::Consume(native) = frame else {
                return Ok(());
            };
            // The session's prefetch applies to the consumers started after it is set; the
            // reader starts them one at a time, so each gets its channel's.
            session.set_prefetch(prefetch);
            session.set_shared_credit(shared_credit);
            let id = events::request_id(channel, generation, u64::from(!c.nowait));
            self.broker.consume(session, id, native)
        });
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                self.live.lock().consumers.remove(&tag);
                let text = e.to_string();
                tracing::info!(peer = %self.peer, connection = session.id, channel, code = e.code().as_u16(), error = %crate::clip::text(&text), "AMQP consume refused");
                self.refuse(channel, e.code(), &text, 60, 20)
            }
        }
    }

    /// `basic.get`: one message with `get-ok` (numbered on the channel like a delivery), or
    /// `get-empty`.
    pub(super) async fn get(
        &mut self,
        channel: u16,
        g: &basic::Get,
        session: &Arc<Session>,
    ) -> Result<(), Step> {
        let frame = Frame::Get(warren_protocol::Get {
            queue: g.queue.to_string(),
            no_ack: g.no_ack,
        });
        let got = match authorize(&session.user, &frame, &mut self.grants) {
            Ok(()) => {
                let Frame::Get(native) = frame else {
                    return Ok(());
                };
                self.broker.get(session, native).await
            }
            Err(e) => Err(e),
        };
        let got = match got {
            Ok(got) => got,
            Err(e) => {
                let text = e.to_string();
                tracing::info!(peer = %self.peer, connection = session.id, channel, code = e.code().as_u16(), error = %crate::clip::text(&text), "AMQP get refused");
                return self.refuse(channel, e.code(), &text, 60, 70);
            }
        };
        let Some(got) = got else {
            self.send(
                channel,
                AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
            );
            return Ok(());
        };
        let tag = {
            let mut shared = self.live.lock();
            let Some(ch) = shared.channels.get_mut(&channel) else {
                return Ok(());
            };
            ch.next_tag += 1;
            if !g.no_ack {
                ch.tags.insert(ch.next_tag, got.delivery_tag);
            }
            ch.next_tag
        };
        let method = AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
            delivery_tag: tag,
            redelivered: got.acquired_count > 0,
            exchange: short_string(&got.message.exchange),
            routing_key: short_string(&got.message.routing_key),
            message_count: u32::try_from(got.message_count).unwrap_or(u32::MAX),
        }));
        let bytes =
            content::encode_with_content(channel, method, &got.message, self.frames.max_frame);
        let _ = self.out.send(Out::Frame(bytes));
        Ok(())
    }

    /// `basic.ack`, `basic.nack` and `basic.reject`: the channel's tags mapped to the
    /// session's, settled one by one. An unknown tag is 406 on the channel, as RabbitMQ.
    pub(super) async fn settle(
        &mut self,
        channel: u16,
        method: basic::AMQPMethod,
        session: &Arc<Session>,
    ) -> Result<(), Step> {
        let (method_id, tag, multiple) = match &method {
            basic::AMQPMethod::Ack(a) => (80, a.delivery_tag, a.multiple),
            basic::AMQPMethod::Reject(r) => (90, r.delivery_tag, false),
            basic::AMQPMethod::Nack(n) => (120, n.delivery_tag, n.multiple),
            _ => return Ok(()),
        };
        // Each delivery's channel tag and the session's.
        let mut taken: Vec<(u64, u64)> = {
            let mut shared = self.live.lock();
            let Some(ch) = shared.channels.get_mut(&channel) else {
                return Ok(());
            };
            if multiple && tag == 0 {
                // RabbitMQ: every outstanding delivery on the channel.
                std::mem::take(&mut ch.tags).into_iter().collect()
            } else if !ch.tags.contains_key(&tag) {
                Vec::new()
            } else if multiple {
                let rest = ch.tags.split_off(&(tag + 1));
                std::mem::replace(&mut ch.tags, rest).into_iter().collect()
            } else {
                ch.tags.remove_entry(&tag).into_iter().collect()
            }
        };
        if taken.is_empty() && !(multiple && tag == 0) {
            return self.refuse(
                channel,
                ErrorCode::PreconditionFailed,
                &format!("unknown delivery tag {tag}"),
                60,
                method_id,
            );
        }
        if self.hold_settle(channel, &method, &mut taken) {
            return Ok(());
        }
        for (_, stag) in taken {
            let result = match &method {
                basic::AMQPMethod::Ack(_) => self.broker.ack(session, stag, false, None).await,
                basic::AMQPMethod::Reject(r) => {
                    self.broker.reject(session, stag, r.requeue, None).await
                }
                basic::AMQPMethod::Nack(n) => {
                    self.broker
                        .nack(session, stag, false, n.requeue, 0, None)
                        .await
                }
                _ => Ok(()),
            };
            if let Err(e) = result {
                // The broker already took it back (a consumer timeout): RabbitMQ's answer
                // to a tag it no longer knows.
                let text = e.to_string();
                return self.refuse(channel, e.code(), &text, 60, method_id);
            }
        }
        Ok(())
    }

    /// A content header or body frame: the next piece of the publish pending on `channel`;
    /// the last piece publishes it.
    pub(super) async fn content(
        &mut self,
        channel: u16,
        header: bool,
        payload: bytes::Bytes,
        session: &Session,
    ) -> Result<(), Step> {
        let unexpected = |text: &str| {
            Err(Step::Close(ConnError::new(
                Reply::UnexpectedFrame,
                format!("{text} (channel {channel})"),
            )))
        };
        let Some(state) = self.channels.get_mut(&channel) else {
            return unexpected("expected method frame, got non method frame instead");
        };
        if state.closing {
            // The rest of a publish the channel's error cut short.
            return Ok(());
        }
        let Some(pending) = state.content.as_mut() else {
            return unexpected("expected method frame, got non method frame instead");
        };
        if header {
            if pending.header.is_some() {
                return unexpected("expected content body, got content header instead");
            }
            if let Some(at) = codec::header_table_offset(&payload) {
                if !codec::table_nesting_ok(&payload[at..], codec::MAX_TABLE_DEPTH) {
                    return Err(too_deep(60, 40));
                }
            }
            let header = match super::wire::parse_content_header(&payload).map_or_else(
                || amq_protocol::frame::parsing::parse_content_header(&payload[..]),
                |header| Ok((&[][..], header)),
            ) {
                Ok(([], header)) => header,
                _ => {
                    return Err(Step::Close(ConnError::new(
                        Reply::FrameError,
                        format!("cannot decode content header (channel {channel})"),
                    )))
                }
            };
            if header.class_id != content::BASIC_CLASS {
                return unexpected(&format!(
                    "expected content header for class 60, got class {}",
                    header.class_id
                ));
            }
            if header.body_size > self.max_body as u64 {
                // As RabbitMQ: refused from the header, before the body is buffered.
                let text = format!(
                    "message size {} is larger than configured max size {}",
                    header.body_size, self.max_body
                );
                return self.refuse(channel, ErrorCode::PreconditionFailed, &text, 60, 40);
            }
            let properties = match content::to_native(&header.properties) {
                Ok(p) => p,
                Err(text) => {
                    return self.refuse(channel, ErrorCode::PreconditionFailed, &text, 60, 40)
                }
            };
            pending.header = Some((properties, header.body_size));
            pending.header_bytes = payload.len();
        } else {
            let Some((_, size)) = &pending.header else {
                return unexpected(
                    "expected content header for class 60, got non content header frame instead",
                );
            };
            if (pending.body.len() + payload.len()) as u64 > *size {
                return Err(Step::Close(ConnError::new(
                    Reply::FrameError,
                    format!(
                        "content body is longer than the {size} bytes its header announced (channel {channel})"
                    ),
                )));
            }
            pending.body.extend_from_slice(&payload);
        }
        let complete =
            matches!(&pending.header, Some((_, size)) if pending.body.len() as u64 == *size);
        if !complete {
            return Ok(());
        }
        let Some(done) = state.content.take() else {
            return Ok(());
        };
        if state.tx.is_some() {
            return self.hold_publish(channel, done, session).await;
        }
        let seq = if state.confirm {
            state.next_seq += 1;
            state.next_seq
        } else {
            0
        };
        let id = events::request_id(channel, state.generation, seq);
        self.publish(channel, id, done, session).await
    }

    /// A whole publish, on the broker's publish path: the native permission check, the
    /// resource alarms, a publish permit, then the broker (which confirms after the commit).
    pub(super) async fn publish(
        &mut self,
        channel: u16,
        request_id: u64,
        done: content::Pending,
        session: &Session,
    ) -> Result<(), Step> {
        // Outside confirm mode the client hears only of refusals (which it then ignores,
        // as a RabbitMQ client without confirms would never see them).
        let no_confirm = !events::wants_confirm(request_id);
        match self.authorized(channel, done, no_confirm, session)? {
            Some(publish) => {
                self.publish_native(channel, request_id, publish, session)
                    .await
            }
            None => Ok(()),
        }
    }

    /// A whole publish as the broker's, once the user may publish it; `None` when it was
    /// refused (the channel is closed).
    pub(super) fn authorized(
        &mut self,
        channel: u16,
        done: content::Pending,
        no_confirm: bool,
        session: &Session,
    ) -> Result<Option<Box<Publish>>, Step> {
        let Some((properties, _)) = done.header else {
            return Ok(None);
        };
        let frame = Frame::Publish(Box::new(Publish {
            exchange: done.method.exchange.to_string(),
            routing_key: done.method.routing_key.to_string(),
            mandatory: done.method.mandatory,
            no_confirm,
            properties,
            body: done.body.freeze(),
        }));
        if let Err(e) = authorize(&session.user, &frame, &mut self.grants) {
            self.refuse_broker(channel, &e, session)?;
            return Ok(None);
        }
        let Frame::Publish(publish) = frame else {
            return Ok(None);
        };
        Ok(Some(publish))
    }

    /// An authorized publish on the broker's path: the resource alarms, a publish permit,
    /// then the broker.
    pub(super) async fn publish_native(
        &mut self,
        channel: u16,
        request_id: u64,
        publish: Box<Publish>,
        session: &Session,
    ) -> Result<(), Step> {
        if let Some(reason) = self.broker.alarms().blocks(publish.properties.persistent) {
            self.wait_while_blocked(session, publish.properties.persistent, reason)
                .await;
        }
        // A permit per publish in flight, given back when its confirm (or settlement) is
        // written: a client that reads no confirms stops being read, as on the native door.
        let permit = match session.publish_permits.try_acquire() {
            // The usual case, with confirms keeping up: no wait to set up.
            Ok(p) => p,
            Err(_) => tokio::select! {
                biased;
                p = session.publish_permits.acquire() => match p {
                    Ok(p) => p,
                    Err(_) => return Err(Step::End(Ended::WriterGone)),
                },
                () = self.writer_gone.cancelled() => return Err(Step::End(Ended::WriterGone)),
                () = session.forced.cancelled() => {
                    let reason = session.forced_reason().to_owned();
                    return Err(Step::Close(ConnError::new(Reply::ConnectionForced, reason)));
                }
                () = self.shutdown.cancelled() => return Err(Step::Close(shutting_down())),
            },
        };
        session
            .published
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.broker.publish(session, request_id, *publish).await {
            Ok(()) => {
                permit.forget();
                Ok(())
            }
            Err(e) => self.refuse_broker(channel, &e, session),
        }
    }
}
