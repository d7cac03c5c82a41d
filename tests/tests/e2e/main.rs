//! The end-to-end tests, in one test binary: each file below is a module of it. One
//! binary links the host once instead of once per file, and `cargo test` runs all of
//! them in one pool of test threads instead of one file after another.

mod bad_input;
mod bench;
mod changes;
mod corpus;
mod crash_safety;
mod equivalence;
mod exact;
mod faults;
mod first_hour;
mod group_commit;
mod hostile;
mod hosts;
mod http;
mod live;
mod nats;
mod page;
mod plugins;
mod python;
mod reassociate;
mod reference;
mod refused;
mod scaffold;
mod serve;
mod shadow;
mod watch;
mod worked_examples;
