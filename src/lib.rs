//! engati-etl: export chatbot conversations from Engati (and its white-label brands) to
//! Parquet, JSONL or a CRM.
pub mod cli;
pub mod commands;
pub mod config;
pub mod engati;
pub mod normalize;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod report;
pub mod sandbox;
pub mod schema;
pub mod secret;
pub mod sink;
pub mod state;
pub mod time;
