//! engati-etl: export chatbot conversations from Engati (and its white-label brands) to
//! Parquet, JSONL or a CRM.
pub mod engati;
pub mod normalize;
pub mod sandbox;
pub mod schema;
pub mod secret;
pub mod time;
