//! The kernels' source and its compilation by NVRTC, opened at run time.
//!
//! The engine loads a CUBIN (machine code for the exact GPU, `sm_75` on a
//! T4), not PTX: the driver JIT-compiles PTX only when the driver is at least
//! as new as the NVRTC that wrote it, and EMR's driver version is not ours to
//! choose; a CUBIN from any CUDA 12 NVRTC loads on any CUDA 12 driver.
//! `fruits info --kernels` also writes the PTX for a virtual architecture,
//! which CI checks on machines without a GPU.

use std::ffi::{c_char, CStr, CString};

use cudarc::nvrtc::{result, sys};

use crate::error::{Error, Result};

/// Every kernel the engine launches, in both storage types.
pub const SOURCE: &str = include_str!("kernels.cu");

/// What NVRTC produces for an architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Machine code for a real GPU (`arch` like `sm_75`).
    Cubin,
    /// Portable assembly for a virtual architecture (`compute_75`).
    Ptx,
}

/// Is libnvrtc present? (cudarc panics on first use when it is not.)
pub fn available() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names.
    unsafe { sys::is_culib_present() }
}

/// NVRTC's version, `(major, minor)`.
pub fn version() -> Result<(i32, i32)> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two out-pointers to live integers.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }.result().map_err(|e| nvrtc_error("nvrtcVersion", e))?;
    Ok((major, minor))
}

/// NVRTC's options for `arch`.
pub fn options(arch: &str) -> [String; 3] {
    [format!("--gpu-architecture={arch}"), "--std=c++14".to_string(), "-default-device".to_string()]
}

/// Compiles [`SOURCE`] for `arch` (`sm_75`, `compute_75`, …); the engine
/// goes through [`super::kernel_cache`], which calls this once per node.
pub fn compile(arch: &str, output: Output) -> Result<Vec<u8>> {
    if !available() {
        return Err(Error::Cuda {
            action: format!("cannot compile the CUDA kernels for {arch}"),
            source: missing_library().into(),
        });
    }
    let src = CString::new(SOURCE).expect("kernels.cu has no NUL byte");
    let name = CString::new("kernels.cu").expect("no NUL");
    let prog = result::create_program(&src, Some(&name)).map_err(|e| nvrtc_error("nvrtcCreateProgram", e))?;
    let options = options(arch);
    // SAFETY: `prog` is a live program until destroyed below; every buffer
    // handed to NVRTC is sized by the matching *Size call.
    unsafe {
        let got = match result::compile_program(prog, &options) {
            Ok(()) => fetch(prog, output),
            Err(e) => Err(Error::Cuda {
                action: format!("NVRTC could not compile src/engine/cuda/kernels.cu for {arch}:\n{}", log(prog)),
                source: Box::new(e),
            }),
        };
        let _ = result::destroy_program(prog);
        got
    }
}

/// # Safety
/// `prog` was compiled successfully.
unsafe fn fetch(prog: sys::nvrtcProgram, output: Output) -> Result<Vec<u8>> {
    let mut size = 0usize;
    let (size_call, get_call): (&str, &str) = match output {
        Output::Cubin => ("nvrtcGetCUBINSize", "nvrtcGetCUBIN"),
        Output::Ptx => ("nvrtcGetPTXSize", "nvrtcGetPTX"),
    };
    match output {
        Output::Cubin => sys::nvrtcGetCUBINSize(prog, &mut size),
        Output::Ptx => sys::nvrtcGetPTXSize(prog, &mut size),
    }
    .result()
    .map_err(|e| nvrtc_error(size_call, e))?;
    let mut buf = vec![0u8; size];
    match output {
        Output::Cubin => sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char),
        Output::Ptx => sys::nvrtcGetPTX(prog, buf.as_mut_ptr() as *mut c_char),
    }
    .result()
    .map_err(|e| nvrtc_error(get_call, e))?;
    if output == Output::Ptx {
        // The PTX text ends with its NUL terminator; keep the text.
        while buf.last() == Some(&0) {
            buf.pop();
        }
    }
    Ok(buf)
}

/// # Safety
/// `prog` is a live program.
unsafe fn log(prog: sys::nvrtcProgram) -> String {
    match result::get_program_log(prog) {
        Ok(raw) => CStr::from_ptr(raw.as_ptr()).to_string_lossy().into_owned(),
        Err(e) => format!("(no log: {e:?})"),
    }
}

fn nvrtc_error(call: &str, e: result::NvrtcError) -> Error {
    Error::Cuda { action: call.to_string(), source: Box::new(e) }
}

/// The message for a machine without NVRTC.
pub fn missing_library() -> String {
    "no libnvrtc.so.12 found (NVRTC, CUDA 12: the EMR bootstrap action installs it; elsewhere install the \
     nvidia-cuda-nvrtc-cu12 wheel or a CUDA 12 toolkit and put its lib folder on LD_LIBRARY_PATH)"
        .to_string()
}
