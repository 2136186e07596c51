//! Text from PDF files (pdf-extract). The library panics on some malformed files; the panic is
//! turned into an error so one bad file is reported, not fatal.

use anyhow::{anyhow, Result};

pub fn to_text(bytes: &[u8]) -> Result<String> {
    let result = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem(bytes));
    match result {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(e)) => Err(anyhow!("{e}")),
        Err(_) => Err(anyhow!("the PDF could not be parsed")),
    }
}
