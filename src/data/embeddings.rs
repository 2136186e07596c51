//! Embedding matrices on disk and in DataFrames: `.npy` (float32, C order) and a Polars
//! `List(Float32)` column.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use polars::prelude::*;

/// An `[n, dim]` tensor as a column of float lists, one embedding per row.
pub fn embeddings_column(name: &str, embeddings: &Tensor) -> Result<Column> {
    let rows: Vec<Vec<f32>> = embeddings.to_dtype(DType::F32)?.to_vec2()?;
    let rows: Vec<Series> = rows
        .into_iter()
        .map(|r| Series::new("".into(), r))
        .collect();
    Ok(Column::new(name.into(), rows))
}

/// Writes an `[n, dim]` tensor as a float32 `.npy` file readable by `numpy.load`.
pub fn write_npy(path: &Path, embeddings: &Tensor) -> Result<()> {
    let (n, dim) = embeddings.dims2()?;
    let data: Vec<f32> = embeddings.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, {dim}), }}");
    // Magic (6) + version (2) + header length (2) + header + '\n' must be a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let mut f =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(&out)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a 2-D float32 `.npy` file written by [`write_npy`] or numpy.
pub fn read_npy(path: &Path) -> Result<Tensor> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("{}: not a .npy file", path.display());
    }
    let (len_bytes, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + len_bytes])?;
    if !header.contains("'<f4'") || header.contains("'fortran_order': True") {
        bail!(
            "{}: only little-endian float32 C-order arrays are read (header {header})",
            path.display()
        );
    }
    let shape: Vec<usize> = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .context("no shape in .npy header")?
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()?;
    let body = &bytes[start + len_bytes..];
    let values: Vec<f32> = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if shape.len() != 2 || shape[0] * shape[1] != values.len() {
        bail!(
            "{}: shape {shape:?} does not match {} values",
            path.display(),
            values.len()
        );
    }
    Ok(Tensor::from_vec(
        values,
        (shape[0], shape[1]),
        &Device::Cpu,
    )?)
}

/// Writes embeddings by extension: `.npy`, or a table with one `embedding` column.
pub fn write_embeddings(embeddings: &Tensor, path: &Path) -> Result<()> {
    if path.extension().is_some_and(|e| e == "npy") {
        return write_npy(path, embeddings);
    }
    let df = DataFrame::new(
        embeddings.dims2()?.0,
        vec![embeddings_column("embedding", embeddings)?],
    )?;
    super::table::write_table(&df, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_and_column_round_trip() {
        let t = Tensor::new(&[[1f32, 2., 3.], [4., 5., 6.]], &Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.npy");
        write_npy(&p, &t).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().len(),
            128 + 24,
            "64-byte aligned header"
        );
        let back = read_npy(&p).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), t.to_vec2::<f32>().unwrap());
        let col = embeddings_column("embedding", &t).unwrap();
        assert_eq!(col.len(), 2);
        assert_eq!(col.dtype(), &DataType::List(Box::new(DataType::Float32)));
    }
}
