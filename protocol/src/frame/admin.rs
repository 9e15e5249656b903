//! The admin frame: `Admin` (0x60), with its layout.
//!
//! `AdminOk` (0x61, the rest of the frame as a UTF-8 JSON body) carries its one field inline
//! in its [`Frame`](super::Frame) variant; its one-line codec is in the dispatch in `mod.rs`.

use bytes::BytesMut;

use super::Payload;
use crate::error::DecodeError;
use crate::field_table::{put_table, read_arguments, FieldTable};
use crate::read::Reader;
use crate::write::put_str16;

/// An administrative request: a named command with typed arguments. Listings and operator
/// actions (`queue.list`, `dlq.replay`, ...) travel this way; PROTOCOL.md lists the commands
/// and the JSON each one answers with.
#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    /// The command, e.g. `queue.list`.
    pub command: String,
    /// Its arguments.
    pub arguments: FieldTable,
}

impl Payload for Admin {
    fn encode(&self, dst: &mut BytesMut) {
        put_str16(dst, &self.command);
        put_table(dst, &self.arguments);
    }

    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Admin {
            command: r.str16("admin command")?,
            arguments: read_arguments(r)?,
        })
    }
}
