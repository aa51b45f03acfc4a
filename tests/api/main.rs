//! The integration test binary: every integration test compiles into this
//! one binary (each extra binary costs link time).
#![allow(clippy::unwrap_used)]

mod client;
mod helpers;

mod abuse;
mod admin;
mod audit;
mod backup;
mod cleanup;
mod cli;
mod cluster;
mod compose;
mod cookies;
mod database;
mod fast_store;
mod gateway;
mod http_basics;
mod keyring;
mod lifecycle;
mod nginx;
mod opaque_auth;
mod replicas;
mod rls;
mod rust_client;
mod sessions;
mod tls;
mod tokens;
mod totp;
mod ui;
mod webauthn;
