//! AMQP reply codes and the one error type every broker decision returns.
//!
//! This is the single place where a failure becomes a reply code; whether it closes the
//! channel or the whole connection follows from the code, as the spec's soft/hard error
//! split says and RabbitMQ does.

use std::fmt;

/// Reply codes from the AMQP 0-9-1 spec, as RabbitMQ uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ReplyCode {
    /// 200: normal close.
    Success = 200,
    /// 311: content too large.
    ContentTooLarge = 311,
    /// 312: mandatory message could not be routed.
    NoRoute = 312,
    /// 313: immediate message had no consumer.
    NoConsumers = 313,
    /// 320: the server is shutting down (or an operator closed the connection).
    ConnectionForced = 320,
    /// 402: bad virtual host.
    InvalidPath = 402,
    /// 403: access refused.
    AccessRefused = 403,
    /// 404: entity not found.
    NotFound = 404,
    /// 405: exclusive queue owned by another connection.
    ResourceLocked = 405,
    /// 406: precondition failed (inequivalent redeclare, unknown delivery tag...).
    PreconditionFailed = 406,
    /// 501: malformed frame.
    FrameError = 501,
    /// 502: malformed method arguments.
    SyntaxError = 502,
    /// 503: invalid command.
    CommandInvalid = 503,
    /// 504: channel misuse.
    ChannelError = 504,
    /// 505: frame out of sequence.
    UnexpectedFrame = 505,
    /// 506: resource error.
    ResourceError = 506,
    /// 530: not allowed.
    NotAllowed = 530,
    /// 540: not implemented.
    NotImplemented = 540,
    /// 541: internal error.
    InternalError = 541,
}

impl ReplyCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// Whether this code closes the whole connection (a hard error) rather than a channel.
    pub fn is_hard(self) -> bool {
        !matches!(
            self,
            ReplyCode::Success
                | ReplyCode::ContentTooLarge
                | ReplyCode::NoRoute
                | ReplyCode::NoConsumers
                | ReplyCode::AccessRefused
                | ReplyCode::NotFound
                | ReplyCode::ResourceLocked
                | ReplyCode::PreconditionFailed
        )
    }

    /// RabbitMQ's name for the code, used as the prefix of reply texts.
    pub fn name(self) -> &'static str {
        match self {
            ReplyCode::Success => "OK",
            ReplyCode::ContentTooLarge => "CONTENT_TOO_LARGE",
            ReplyCode::NoRoute => "NO_ROUTE",
            ReplyCode::NoConsumers => "NO_CONSUMERS",
            ReplyCode::ConnectionForced => "CONNECTION_FORCED",
            ReplyCode::InvalidPath => "INVALID_PATH",
            ReplyCode::AccessRefused => "ACCESS_REFUSED",
            ReplyCode::NotFound => "NOT_FOUND",
            ReplyCode::ResourceLocked => "RESOURCE_LOCKED",
            ReplyCode::PreconditionFailed => "PRECONDITION_FAILED",
            ReplyCode::FrameError => "FRAME_ERROR",
            ReplyCode::SyntaxError => "SYNTAX_ERROR",
            ReplyCode::CommandInvalid => "COMMAND_INVALID",
            ReplyCode::ChannelError => "CHANNEL_ERROR",
            ReplyCode::UnexpectedFrame => "UNEXPECTED_FRAME",
            ReplyCode::ResourceError => "RESOURCE_ERROR",
            ReplyCode::NotAllowed => "NOT_ALLOWED",
            ReplyCode::NotImplemented => "NOT_IMPLEMENTED",
            ReplyCode::InternalError => "INTERNAL_ERROR",
        }
    }

    /// Maps a numeric code back, for codes that come from the wire layer.
    pub fn from_code(code: u16) -> ReplyCode {
        match code {
            200 => ReplyCode::Success,
            311 => ReplyCode::ContentTooLarge,
            312 => ReplyCode::NoRoute,
            313 => ReplyCode::NoConsumers,
            320 => ReplyCode::ConnectionForced,
            402 => ReplyCode::InvalidPath,
            403 => ReplyCode::AccessRefused,
            404 => ReplyCode::NotFound,
            405 => ReplyCode::ResourceLocked,
            406 => ReplyCode::PreconditionFailed,
            501 => ReplyCode::FrameError,
            502 => ReplyCode::SyntaxError,
            503 => ReplyCode::CommandInvalid,
            504 => ReplyCode::ChannelError,
            505 => ReplyCode::UnexpectedFrame,
            506 => ReplyCode::ResourceError,
            530 => ReplyCode::NotAllowed,
            540 => ReplyCode::NotImplemented,
            _ => ReplyCode::InternalError,
        }
    }
}

/// An error to report to the client: a reply code, RabbitMQ-style text, and the method
/// that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpError {
    /// The reply code.
    pub code: ReplyCode,
    /// Human-readable text, without the code name prefix.
    pub text: String,
    /// Class of the offending method (0 if none).
    pub class_id: u16,
    /// Offending method (0 if none).
    pub method_id: u16,
}

impl AmqpError {
    /// A new error with no method attached yet.
    pub fn new(code: ReplyCode, text: impl Into<String>) -> Self {
        Self {
            code,
            text: text.into(),
            class_id: 0,
            method_id: 0,
        }
    }

    /// Attaches the method that caused the error, unless one is already set.
    pub fn on(mut self, class_id: u16, method_id: u16) -> Self {
        if self.class_id == 0 && self.method_id == 0 {
            self.class_id = class_id;
            self.method_id = method_id;
        }
        self
    }

    /// Whether this error closes the connection rather than the channel.
    pub fn is_connection_error(&self) -> bool {
        self.code.is_hard()
    }

    /// The reply text as RabbitMQ formats it: `NAME - text`.
    pub fn reply_text(&self) -> String {
        let mut t = format!("{} - {}", self.code.name(), self.text);
        if t.len() > 255 {
            let mut cut = 255;
            while !t.is_char_boundary(cut) {
                cut -= 1;
            }
            t.truncate(cut);
        }
        t
    }

    /// 404 NOT_FOUND.
    pub fn not_found(text: impl Into<String>) -> Self {
        Self::new(ReplyCode::NotFound, text)
    }
    /// 403 ACCESS_REFUSED.
    pub fn access_refused(text: impl Into<String>) -> Self {
        Self::new(ReplyCode::AccessRefused, text)
    }
    /// 405 RESOURCE_LOCKED.
    pub fn resource_locked(text: impl Into<String>) -> Self {
        Self::new(ReplyCode::ResourceLocked, text)
    }
    /// 406 PRECONDITION_FAILED.
    pub fn precondition_failed(text: impl Into<String>) -> Self {
        Self::new(ReplyCode::PreconditionFailed, text)
    }
    /// 503 COMMAND_INVALID.
    pub fn command_invalid(text: impl Into<String>) -> Self {
        Self::new(ReplyCode::CommandInvalid, text)
    }
    /// 504 CHANNEL_ERROR.
    pub fn channel_error(text: impl Into<String>) -> Self {
        Self::new(ReplyCode::ChannelError, text)
    }
    /// 505 UNEXPECTED_FRAME.
    pub fn unexpected_frame(text: impl Into<String>) -> Self {
        Self::new(ReplyCode::UnexpectedFrame, text)
    }
    /// 530 NOT_ALLOWED.
    pub fn not_allowed(text: impl Into<String>) -> Self {
        Self::new(ReplyCode::NotAllowed, text)
    }
    /// 540 NOT_IMPLEMENTED.
    pub fn not_implemented(text: impl Into<String>) -> Self {
        Self::new(ReplyCode::NotImplemented, text)
    }
    /// 541 INTERNAL_ERROR.
    pub fn internal(text: impl Into<String>) -> Self {
        Self::new(ReplyCode::InternalError, text)
    }
    /// 501 FRAME_ERROR.
    pub fn frame_error(text: impl Into<String>) -> Self {
        Self::new(ReplyCode::FrameError, text)
    }
}

impl fmt::Display for AmqpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code.code(), self.reply_text())
    }
}

impl std::error::Error for AmqpError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_and_hard_split() {
        assert!(!AmqpError::not_found("x").is_connection_error());
        assert!(!AmqpError::precondition_failed("x").is_connection_error());
        assert!(AmqpError::not_allowed("x").is_connection_error());
        assert!(AmqpError::frame_error("x").is_connection_error());
        assert!(AmqpError::channel_error("x").is_connection_error());
    }

    #[test]
    fn text_is_prefixed_and_bounded() {
        let e = AmqpError::not_found("no queue 'q' in vhost '/'");
        assert_eq!(e.reply_text(), "NOT_FOUND - no queue 'q' in vhost '/'");
        let long = AmqpError::not_found("é".repeat(300));
        assert!(long.reply_text().len() <= 255);
    }
}
