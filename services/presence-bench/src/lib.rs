//! Benchmark tooling: a load generator that drives many devices from many loopback source
//! addresses and processes, and the peers our figures are compared with.

pub mod connect;
pub mod device;
pub mod query_wire;
pub mod shards;
pub mod stats;
pub mod wire;
