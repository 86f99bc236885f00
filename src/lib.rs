//! engati-etl: export chatbot conversations from Engati (and its white-label brands) to
//! Parquet, JSONL or a CRM.
pub mod engati;
pub mod normalize;
pub mod sandbox;
pub mod schema;
pub mod secret;
pub mod time;
pub mod plan;
pub mod sink;
pub mod state;
pub mod pipeline;
pub mod report;
pub mod config;
pub mod cli;
pub mod progress;
pub mod commands;
