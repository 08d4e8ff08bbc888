//! Finding a usable GPU without ever letting cudarc panic.
//!
//! The binary links no CUDA library: libcuda (the driver), cuBLAS and NVRTC
//! are opened at run time. cudarc panics when a library it needs is absent
//! or lacks a symbol, so every step here is checked first, in the order a
//! user would fix them: driver library, driver initialisation, driver
//! version, a device, then cuBLAS and NVRTC. The first failure is the reason
//! `--device auto` gives for running on the CPU.

use std::sync::Arc;

use cudarc::driver::{result as drv, sys as drv_sys, CudaContext};

use super::nvrtc;

/// The oldest driver API this binary's bindings (CUDA 12) may call:
/// CUDA 12.0, NVIDIA driver 525.
pub const MIN_DRIVER_API: i32 = 12000;

/// One CUDA device as `fruits info` shows it.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub memory_bytes: usize,
    /// `(major, minor)`: `(7, 5)` on a T4.
    pub compute_capability: (i32, i32),
}

impl DeviceInfo {
    /// The NVRTC architecture of this device's machine code (`sm_75`).
    pub fn arch(&self) -> String {
        format!("sm_{}{}", self.compute_capability.0, self.compute_capability.1)
    }
}

/// What the machine offers: the versions of the libraries found, and the
/// devices.
#[derive(Debug, Clone)]
pub struct Found {
    /// The CUDA version the driver supports, e.g. `12040` for 12.4.
    pub driver_api: i32,
    pub cublas_version: i32,
    pub nvrtc_version: (i32, i32),
    pub devices: Vec<DeviceInfo>,
}

/// Why no GPU can be used, in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn no(reason: impl Into<String>) -> Unavailable {
    Unavailable(reason.into())
}

/// `12040` → `12.4`.
pub fn api_version(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// Checks every library and lists the devices; the first missing piece is
/// the error.
pub fn probe() -> Result<Found, Unavailable> {
    // SAFETY: only tries to dlopen the driver library by its usual names.
    if !unsafe { drv_sys::is_culib_present() } {
        return Err(no("no libcuda.so.1 (no NVIDIA driver installed on this machine)"));
    }
    drv::init().map_err(|e| no(format!("the NVIDIA driver did not initialise: {e}")))?;
    let mut driver_api = 0;
    // SAFETY: an out-pointer to a live integer.
    unsafe { drv_sys::cuDriverGetVersion(&mut driver_api) }
        .result()
        .map_err(|e| no(format!("cuDriverGetVersion failed: {e}")))?;
    if driver_api < MIN_DRIVER_API {
        return Err(no(format!(
            "driver too old: it supports CUDA {}, this binary needs CUDA {} (NVIDIA driver >= 525)",
            api_version(driver_api),
            api_version(MIN_DRIVER_API)
        )));
    }
    let count = drv::device::get_count().map_err(|e| no(format!("no CUDA device: {e}")))?;
    if count < 1 {
        return Err(no("the NVIDIA driver is installed but sees no CUDA device"));
    }
    let devices = (0..count as usize).map(device_info).collect::<Result<Vec<_>, _>>()?;
    // SAFETY: only tries to dlopen cuBLAS by its usual names.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err(no("no libcublas.so.12 (cuBLAS, CUDA 12: the EMR bootstrap action installs it; elsewhere \
                       install the nvidia-cublas-cu12 wheel or a CUDA 12 toolkit and put its lib folder on \
                       LD_LIBRARY_PATH)"));
    }
    if !nvrtc::available() {
        return Err(no(nvrtc::missing_library()));
    }
    let nvrtc_version = nvrtc::version().map_err(|e| no(e.to_string()))?;
    let mut cublas_version = 0;
    // SAFETY: an out-pointer to a live integer; the property is a plain enum.
    unsafe {
        cudarc::cublas::sys::cublasGetProperty(
            cudarc::cublas::sys::libraryPropertyType::MAJOR_VERSION,
            &mut cublas_version,
        )
    }
    .result()
    .map_err(|e| no(format!("cuBLAS does not answer: {e:?}")))?;
    Ok(Found { driver_api, cublas_version, nvrtc_version, devices })
}

fn device_info(ordinal: usize) -> Result<DeviceInfo, Unavailable> {
    let fail = |what: &str, e: drv::DriverError| no(format!("CUDA device {ordinal}: {what}: {e}"));
    let dev = drv::device::get(ordinal as i32).map_err(|e| fail("cuDeviceGet", e))?;
    let name = drv::device::get_name(dev).map_err(|e| fail("name", e))?;
    // SAFETY: `dev` is a device handle the driver just gave.
    let memory_bytes = unsafe { drv::device::total_mem(dev) }.map_err(|e| fail("memory", e))?;
    let attr = |a| unsafe { drv::device::get_attribute(dev, a) };
    use drv_sys::CUdevice_attribute::*;
    let major = attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR).map_err(|e| fail("compute capability", e))?;
    let minor = attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR).map_err(|e| fail("compute capability", e))?;
    Ok(DeviceInfo { ordinal, name, memory_bytes, compute_capability: (major, minor) })
}

/// A device ready for the engine: its context, with the probe's answers.
pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub info: DeviceInfo,
    pub found: Found,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cuda:{} ({})", self.info.ordinal, self.info.name)
    }
}

/// Opens device `ordinal` after a full [`probe`].
pub fn open(ordinal: usize) -> Result<Arc<Gpu>, Unavailable> {
    let found = probe()?;
    let info = found
        .devices
        .get(ordinal)
        .cloned()
        .ok_or_else(|| no(format!("no CUDA device {ordinal} ({} found)", found.devices.len())))?;
    let ctx = CudaContext::new(ordinal).map_err(|e| no(format!("cannot open CUDA device {ordinal}: {e}")))?;
    // One stream runs everything in order: cudarc's per-buffer events would
    // only add work.
    // SAFETY: no buffer of this context exists yet.
    unsafe { ctx.disable_event_tracking() };
    Ok(Arc::new(Gpu { ctx, info, found }))
}
