//! broker-cli: manage the broker through its management HTTP API.

fn main() {}
