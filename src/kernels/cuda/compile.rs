//! The kernels compiled by NVRTC for the GPU present, and the check that
//! the CUDA libraries load at all.

use std::ffi::CString;

use cudarc::cublas::sys as cb;
use cudarc::driver::sys as ds;
use cudarc::nvrtc::{result as nr, sys as ns};

use super::{call, GpuError, SOURCE};

/// Whether the driver, cuBLAS and NVRTC libraries can be loaded (before any
/// call into them: a missing library would otherwise panic in `cudarc`).
pub fn libraries_present() -> Result<(), GpuError> {
    // SAFETY: these only try `dlopen` on the candidate names.
    let (cuda, cublas, nvrtc) = unsafe {
        (
            ds::is_culib_present(),
            cb::is_culib_present(),
            ns::is_culib_present(),
        )
    };
    let missing: Vec<&str> = [
        (cuda, "libcuda (the NVIDIA driver)"),
        (cublas, "libcublas"),
        (nvrtc, "libnvrtc"),
    ]
    .iter()
    .filter(|(ok, _)| !ok)
    .map(|(_, n)| *n)
    .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(GpuError::Unavailable(format!(
            "cannot load {} (is LD_LIBRARY_PATH set to the CUDA libraries?)",
            missing.join(", ")
        )))
    }
}

/// Compiles [`SOURCE`] for `arch` (e.g. `sm_87`) to a CUBIN; needs only
/// libnvrtc, no GPU (the tests compile it for each supported Jetson).
pub fn compile(arch: &str) -> Result<Vec<u8>, GpuError> {
    compile_source(SOURCE, arch)
}

/// As [`compile`], any source (the layout tests add assertions to it).
pub fn compile_source(source: &str, arch: &str) -> Result<Vec<u8>, GpuError> {
    // SAFETY: only loads the library.
    if !unsafe { ns::is_culib_present() } {
        return Err(GpuError::Unavailable("cannot load libnvrtc".into()));
    }
    let src =
        CString::new(source).map_err(|_| GpuError::Unavailable("a NUL in the source".into()))?;
    let prog = nr::create_program(&src, None).map_err(call("nvrtcCreateProgram"))?;
    let opts = [
        format!("--gpu-architecture={arch}"),
        "-default-device".into(),
    ];
    // SAFETY: `prog` was just created and is destroyed once, below.
    let compiled = unsafe { nr::compile_program(prog, &opts) };
    let out = match compiled {
        Ok(()) => {
            let mut size = 0usize;
            // SAFETY: `prog` compiled; the buffer has the size NVRTC gives.
            unsafe {
                ns::nvrtcGetCUBINSize(prog, &mut size)
                    .result()
                    .map_err(call("nvrtcGetCUBINSize"))?;
                let mut bin = vec![0u8; size];
                ns::nvrtcGetCUBIN(prog, bin.as_mut_ptr().cast())
                    .result()
                    .map_err(call("nvrtcGetCUBIN"))?;
                Ok(bin)
            }
        }
        Err(_) => {
            // SAFETY: `prog` exists; the log is a C string NVRTC filled.
            let log = unsafe { nr::get_program_log(prog) }
                .map(|l| {
                    let bytes: Vec<u8> =
                        l.iter().map(|c| *c as u8).take_while(|c| *c != 0).collect();
                    String::from_utf8_lossy(&bytes).into_owned()
                })
                .unwrap_or_default();
            Err(GpuError::Compile {
                arch: arch.into(),
                log: log.lines().take(20).collect::<Vec<_>>().join(" | "),
            })
        }
    };
    // SAFETY: created above, destroyed once.
    let _ = unsafe { nr::destroy_program(prog) };
    out
}
