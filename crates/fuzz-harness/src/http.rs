//! The management API's request bodies: the harness is
//! `broker_server::http::fuzzing::body`, which lives beside the handlers so that it calls
//! their own private parsers.

/// A request body for one endpoint (first byte), parsed and validated as its handler does.
pub fn bodies(data: &[u8]) {
    broker_server::http::fuzzing::body(data);
}
