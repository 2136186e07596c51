"""Link-time stand-ins for the CUDA libraries candle's CUDA build links against.

candle's `cuda` feature links cudarc dynamically to libcuda, libnvrtc, libcurand, libcublas and
libcublasLt. A machine without a GPU has no libcuda at all (it ships with the driver), and the
others are large downloads, yet only their names and symbols matter for linking. This writes, for
each, a small shared library exporting every function cudarc's bindings declare, under the real
library's soname, so that the binary loads the real libraries on a machine that has them.
Each stand-in returns 999 (CUDA_ERROR_UNKNOWN): put on the library path of a machine without
CUDA (a link named by the soname is made beside each), the binary starts and runs on the CPU,
and asking for a GPU fails cleanly.

    python3 scripts/cuda-stubs.py CUDARC_SRC_DIR OUT_DIR
"""

import re
import subprocess
import sys
from pathlib import Path

# cudarc module -> (library, soname of the CUDA 13 library)
LIBRARIES = {
    "driver": ("cuda", "libcuda.so.1"),
    "nvrtc": ("nvrtc", "libnvrtc.so.13"),
    "curand": ("curand", "libcurand.so.10"),
    "cublas": ("cublas", "libcublas.so.13"),
    "cublaslt": ("cublasLt", "libcublasLt.so.13"),
}


def main(src: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for module, (lib, soname) in LIBRARIES.items():
        bindings = src / module / "sys" / "mod.rs"
        names = sorted(set(re.findall(r"^pub unsafe fn (\w+)\(", bindings.read_text(), re.M)))
        if not names:
            sys.exit(f"cuda-stubs: no functions found in {bindings}")
        c = out / f"{lib}.c"
        c.write_text("".join(f"int {n}(void) {{ return 999; }}\n" for n in names))
        so = out / f"lib{lib}.so"
        subprocess.run(
            ["cc", "-shared", "-fPIC", "-o", str(so), f"-Wl,-soname,{soname}", str(c)], check=True
        )
        link = out / soname
        link.unlink(missing_ok=True)
        link.symlink_to(so.name)
        print(f"cuda-stubs: {so.name} ({soname}): {len(names)} functions", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
