//! `ragtune kernel install`: writes the kernelspec (`kernels/ragtune/` in the repository, built
//! into the binary) where Jupyter looks for kernels, with `argv[0]` set to this executable so
//! Jupyter starts the same build that installed it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

const KERNEL_JSON: &str = include_str!("../../kernels/ragtune/kernel.json");
const LOGO_32: &[u8] = include_bytes!("../../kernels/ragtune/logo-32x32.png");
const LOGO_64: &[u8] = include_bytes!("../../kernels/ragtune/logo-64x64.png");

/// The kernel's name in Jupyter (`--kernel ragtune`, `kernelspec.name` in notebooks).
pub const KERNEL_NAME: &str = "ragtune";

/// Where to install.
pub enum Target {
    /// The user's Jupyter data folder (`$JUPYTER_DATA_DIR`, else `~/.local/share/jupyter`,
    /// `~/Library/Jupyter` on macOS).
    User,
    /// `PREFIX/share/jupyter` (a virtual environment's `sys.prefix`, for example).
    Prefix(PathBuf),
}

fn user_data_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("JUPYTER_DATA_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set; pass --prefix")?;
    Ok(if cfg!(target_os = "macos") {
        home.join("Library/Jupyter")
    } else {
        std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".local/share"))
            .join("jupyter")
    })
}

/// The kernelspec folder for `target`.
pub fn kernel_dir(target: &Target) -> Result<PathBuf> {
    let data = match target {
        Target::User => user_data_dir()?,
        Target::Prefix(prefix) => prefix.join("share").join("jupyter"),
    };
    Ok(data.join("kernels").join(KERNEL_NAME))
}

/// The kernel.json for an executable at `exe`.
pub fn kernel_json(exe: &Path) -> Result<String> {
    let mut spec: serde_json::Value =
        serde_json::from_str(KERNEL_JSON).context("kernels/ragtune/kernel.json")?;
    spec["argv"][0] = serde_json::Value::String(exe.display().to_string());
    Ok(serde_json::to_string_pretty(&spec)? + "\n")
}

/// Installs the kernelspec and returns its folder.
pub fn install(target: &Target) -> Result<PathBuf> {
    let dir = kernel_dir(target)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .context("cannot locate the ragtune executable")?;
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    };
    write("kernel.json", kernel_json(&exe)?.as_bytes())?;
    write("logo-32x32.png", LOGO_32)?;
    write("logo-64x64.png", LOGO_64)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_json_runs_this_executable_with_message_interrupts() {
        let json: serde_json::Value =
            serde_json::from_str(&kernel_json(Path::new("/opt/bin/ragtune")).unwrap()).unwrap();
        assert_eq!(
            json["argv"],
            serde_json::json!([
                "/opt/bin/ragtune",
                "kernel",
                "--connection-file",
                "{connection_file}"
            ])
        );
        assert_eq!(json["interrupt_mode"], "message");
        assert_eq!(json["language"], "rhai");
        let dir = kernel_dir(&Target::Prefix("/venv".into())).unwrap();
        assert_eq!(dir, Path::new("/venv/share/jupyter/kernels/ragtune"));
        assert!(LOGO_64.starts_with(b"\x89PNG"));
    }
}
