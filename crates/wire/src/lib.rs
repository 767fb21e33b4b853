//! The wire layer of the broker: turns bytes from a socket into validated AMQP 0-9-1
//! frames and complete commands, and turns replies back into bytes.
//!
//! Nothing here does I/O. The decoder reports incomplete input as `Ok(None)`, never as an
//! error, so the caller reads more and tries again. Every limit (frame size, message size,
//! field-table nesting depth) is enforced *before* the expensive work it protects: a frame
//! header announcing too large a payload is refused before the payload is read, and the
//! nesting of field tables is measured before amq-protocol's recursive parser sees them.

pub mod assembly;
pub mod decode;
pub mod depth;
pub mod encode;
pub mod error;
pub mod frame;

pub use amq_protocol::protocol;
pub use amq_protocol::types;
pub use assembly::{Assembler, Command, Content};
pub use decode::FrameDecoder;
pub use error::WireError;
pub use frame::{Frame, Properties};
