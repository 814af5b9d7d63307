//! Opening a stream's decoder: FFmpeg's decode threads (`cameras.decode_threads`) and hardware
//! decoding through FFmpeg's hwaccel (`cameras.hwaccel`: VAAPI on `/dev/dri/renderD128`, CUDA /
//! NVDEC), with software decoding as the fallback whenever no hardware device opens.
//!
//! The only `unsafe` of the crate is here: FFmpeg's hwaccel has no safe binding in ffmpeg-next,
//! so the device context, the `get_format` callback and the download of hardware frames go
//! through `ffmpeg_next::ffi`.

use std::ffi::CStr;

use ffmpeg::ffi;
use ffmpeg::format::Pixel;
use ffmpeg_next as ffmpeg;

use crate::settings::Hwaccel;

/// The render node VAAPI opens.
pub const VAAPI_DEVICE: &str = "/dev/dri/renderD128";

/// What actually decodes a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Software,
    Vaapi,
    Cuda,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Software => "software",
            Self::Vaapi => "vaapi",
            Self::Cuda => "cuda",
        }
    }

    fn device_type(self) -> ffi::AVHWDeviceType {
        match self {
            Self::Software => ffi::AVHWDeviceType::AV_HWDEVICE_TYPE_NONE,
            Self::Vaapi => ffi::AVHWDeviceType::AV_HWDEVICE_TYPE_VAAPI,
            Self::Cuda => ffi::AVHWDeviceType::AV_HWDEVICE_TYPE_CUDA,
        }
    }
}

/// An opened decoder, what decodes on it, and why the hardware asked for was not used.
pub struct Opened {
    pub decoder: ffmpeg::decoder::Video,
    pub backend: Backend,
    /// Set when `hwaccel` asked for hardware and software decodes instead: each device's reason.
    pub fallback: Option<String>,
}

/// The hardware backends `hwaccel` tries, in order.
pub fn candidates(hwaccel: Hwaccel) -> &'static [Backend] {
    match hwaccel {
        Hwaccel::None => &[],
        Hwaccel::Auto => &[Backend::Vaapi, Backend::Cuda],
        Hwaccel::Vaapi => &[Backend::Vaapi],
        Hwaccel::Cuda => &[Backend::Cuda],
    }
}

/// Opens a video decoder for `parameters` with `threads` decode threads (0: FFmpeg's choice)
/// on the first hardware backend of `hwaccel` that opens, else in software.
pub fn open(parameters: ffmpeg::codec::Parameters, threads: u32, hwaccel: Hwaccel) -> Result<Opened, String> {
    let mut reasons = Vec::new();
    for &backend in candidates(hwaccel) {
        match hardware_device(&parameters, backend) {
            Ok(device) => {
                let mut context = context(&parameters, threads)?;
                // SAFETY: the context is ours and not opened yet; it takes over the device
                // reference (freed with the context) and keeps the callback, a plain function.
                unsafe {
                    let raw = context.as_mut_ptr();
                    (*raw).hw_device_ctx = device;
                    (*raw).get_format = Some(match backend {
                        Backend::Vaapi => vaapi_format,
                        _ => cuda_format,
                    });
                }
                match context.decoder().video() {
                    Ok(decoder) => return Ok(Opened { decoder, backend, fallback: None }),
                    Err(e) => reasons.push(format!("{}: {e}", backend.as_str())),
                }
            }
            Err(reason) => reasons.push(reason),
        }
    }
    let decoder = context(&parameters, threads)?.decoder().video().map_err(|e| format!("cannot decode stream: {e}"))?;
    let fallback = (!reasons.is_empty()).then(|| reasons.join("; "));
    Ok(Opened { decoder, backend: Backend::Software, fallback })
}

fn context(parameters: &ffmpeg::codec::Parameters, threads: u32) -> Result<ffmpeg::codec::Context, String> {
    let mut context = ffmpeg::codec::context::Context::from_parameters(parameters.clone())
        .map_err(|e| format!("cannot decode stream: {e}"))?;
    // SAFETY: a field of the context we own, before it is opened; FFmpeg reads it at opening.
    unsafe { (*context.as_mut_ptr()).thread_count = threads as std::ffi::c_int };
    Ok(context)
}

/// A device context of `backend` for a codec that can decode on it, or why not.
fn hardware_device(parameters: &ffmpeg::codec::Parameters, backend: Backend) -> Result<*mut ffi::AVBufferRef, String> {
    let name = backend.as_str();
    let codec = ffmpeg::decoder::find(parameters.id()).ok_or_else(|| format!("{name}: no decoder"))?;
    let supported = (0..).map_while(|i| {
        // SAFETY: FFmpeg returns a static descriptor or null past the last one.
        let config = unsafe { ffi::avcodec_get_hw_config(codec.as_ptr(), i).as_ref() }?;
        Some(
            config.device_type == backend.device_type()
                && config.methods & ffi::AV_CODEC_HW_CONFIG_METHOD_HW_DEVICE_CTX as std::ffi::c_int != 0,
        )
    });
    if !supported.into_iter().any(|s| s) {
        return Err(format!("{name}: FFmpeg cannot decode {:?} on it", parameters.id()));
    }
    let device: Option<&CStr> = match backend {
        Backend::Vaapi if !std::path::Path::new(VAAPI_DEVICE).exists() => {
            return Err(format!("{name}: no {VAAPI_DEVICE}"));
        }
        Backend::Vaapi => Some(c"/dev/dri/renderD128"),
        _ => None,
    };
    let mut buffer: *mut ffi::AVBufferRef = std::ptr::null_mut();
    // SAFETY: FFmpeg writes a new reference into `buffer` on success and leaves it null otherwise.
    let code = unsafe {
        ffi::av_hwdevice_ctx_create(
            &mut buffer,
            backend.device_type(),
            device.map_or(std::ptr::null(), CStr::as_ptr),
            std::ptr::null_mut(),
            0,
        )
    };
    if code < 0 || buffer.is_null() {
        return Err(format!("{name}: cannot open the device ({})", ffmpeg::Error::from(code)));
    }
    Ok(buffer)
}

/// FFmpeg's `get_format`: the hardware format when offered, else FFmpeg's own (software) choice.
fn pick(
    context: *mut ffi::AVCodecContext,
    formats: *const ffi::AVPixelFormat,
    wanted: ffi::AVPixelFormat,
) -> ffi::AVPixelFormat {
    let mut at = formats;
    // SAFETY: FFmpeg passes a list ended by AV_PIX_FMT_NONE.
    unsafe {
        while *at != ffi::AVPixelFormat::AV_PIX_FMT_NONE {
            if *at == wanted {
                return wanted;
            }
            at = at.add(1);
        }
        ffi::avcodec_default_get_format(context, formats)
    }
}

unsafe extern "C" fn vaapi_format(
    context: *mut ffi::AVCodecContext,
    formats: *const ffi::AVPixelFormat,
) -> ffi::AVPixelFormat {
    pick(context, formats, ffi::AVPixelFormat::AV_PIX_FMT_VAAPI)
}

unsafe extern "C" fn cuda_format(
    context: *mut ffi::AVCodecContext,
    formats: *const ffi::AVPixelFormat,
) -> ffi::AVPixelFormat {
    pick(context, formats, ffi::AVPixelFormat::AV_PIX_FMT_CUDA)
}

/// A frame decoded on the device, copied into system memory (`scratch`) and swapped into
/// `frame`; a software frame stays as it is.
pub fn download(frame: &mut ffmpeg::frame::Video, scratch: &mut ffmpeg::frame::Video) -> Result<(), String> {
    if !matches!(frame.format(), Pixel::VAAPI | Pixel::CUDA) {
        return Ok(());
    }
    // SAFETY: both frames are valid; FFmpeg allocates `scratch`'s buffers in a format it reads.
    let code = unsafe {
        ffi::av_frame_unref(scratch.as_mut_ptr());
        let code = ffi::av_hwframe_transfer_data(scratch.as_mut_ptr(), frame.as_ptr(), 0);
        if code >= 0 {
            ffi::av_frame_copy_props(scratch.as_mut_ptr(), frame.as_ptr());
        }
        code
    };
    if code < 0 {
        return Err(format!("cannot copy a hardware frame: {}", ffmpeg::Error::from(code)));
    }
    std::mem::swap(frame, scratch);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip_parameters() -> ffmpeg::codec::Parameters {
        ffmpeg::init().unwrap();
        let clip = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/assets/video/overpass_video03.avi");
        let input = ffmpeg::format::input(&clip).unwrap();
        let stream = input.streams().best(ffmpeg::media::Type::Video).unwrap();
        stream.parameters()
    }

    #[test]
    fn software_unless_asked_and_the_fallback_says_why() {
        let parameters = clip_parameters();
        let plain = open(parameters.clone(), 1, Hwaccel::None).unwrap();
        assert_eq!((plain.backend, plain.fallback), (Backend::Software, None));
        let threaded = open(parameters.clone(), 0, Hwaccel::None).unwrap();
        assert_eq!(threaded.backend, Backend::Software);
        // Wherever this runs, `auto` opens: on hardware, or in software with each device's reason.
        let auto = open(parameters, 1, Hwaccel::Auto).unwrap();
        match auto.backend {
            Backend::Software => {
                let why = auto.fallback.expect("a fallback says why");
                assert!(why.contains("vaapi") && why.contains("cuda"), "{why}");
            }
            _ => assert_eq!(auto.fallback, None),
        }
        assert!(candidates(Hwaccel::None).is_empty());
        assert_eq!(candidates(Hwaccel::Cuda), &[Backend::Cuda]);
    }
}
