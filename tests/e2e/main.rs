//! End-to-end tests: the real `autoprov` server over real HTTP, a fresh site and SQLite
//! database per test. One test binary; add modules, not binaries.

mod helpers;

mod backups;
mod bad_input;
mod cli;
mod dynamic;
mod firmware;
mod import;
mod lifecycle;
