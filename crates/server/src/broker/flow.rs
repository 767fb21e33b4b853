pub use broker_core::flow::*;
