//! patience runs a command and, when it fails, runs it again.
//!
//! The data flows one way:
//! argv ([`cli`]) → settings ([`config`], [`settings`]) → the attempt loop
//! ([`executor`], one [`child`] per attempt) → an [`outcome::Outcome`] →
//! messages, JSON and the exit status ([`report`]).
//!
//! Each finished attempt and run is also sent as a datagram ([`metrics`]) to
//! `patienced` ([`daemon`]), which serves them to Prometheus.
//!
//! [`state`] is the state shared by every patience process of a key (circuit
//! breaker, rate limit, concurrency limit), consulted by the attempt loop.
//!
//! [`sys`] holds every `unsafe` block and libc call behind a safe API.

pub mod app;
pub mod backoff;
pub mod child;
pub mod cli;
pub mod conditions;
pub mod config;
pub mod daemon;
pub mod duration;
pub mod error;
pub mod executor;
pub mod messages;
pub mod metrics;
pub mod outcome;
pub mod output;
pub mod reaper;
pub mod report;
pub mod services;
pub mod settings;
pub mod signals;
pub mod state;
pub mod sys;
