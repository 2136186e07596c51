//! Data in and out: every dataset a user may inspect is a Polars DataFrame with documented
//! column names. This stage reads and writes; it does not encode, mine or train.

pub mod beir;
pub mod embeddings;
pub mod jsonl;
pub mod llamaindex;
pub mod retrieval;
pub mod table;

pub use beir::{load_beir, write_beir};
pub use llamaindex::{load_llamaindex, write_llamaindex};
pub use retrieval::{document_text, Qrels, RetrievalDataset};
pub use table::{read_table, require_columns, write_table};
