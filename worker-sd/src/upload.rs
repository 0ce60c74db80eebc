//! Uploaded images (img2img's init image, inpainting's mask): PNG or JPEG only, refused by the size
//! their header declares before a single pixel is decoded, so a small file that claims 50000x50000
//! pixels costs nothing. Decoding is CPU work: the server calls this off the async executor.

use std::io::Cursor;

use image::{ImageFormat, ImageReader, Limits};

use crate::error::{Result, SdError};

/// Largest side of an uploaded image, in pixels; generation sizes stop well below it.
pub const MAX_UPLOAD_SIDE: u32 = 4096;

/// Most bytes the decoder may allocate (a 4096x4096 16-bit RGBA image is 128 MiB).
const MAX_DECODE_ALLOC: u64 = 256 << 20;

/// Decodes an uploaded image (PNG or JPEG) for `field`, naming the field and the problem on failure.
pub fn decode_image(bytes: &[u8], field: &'static str) -> Result<image::DynamicImage> {
    let bad = |e: &dyn std::fmt::Display| SdError::invalid(field, format!("not a PNG or JPEG image: {e}"));
    let format = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(&e))?
        .format();
    let format = match format {
        Some(f @ (ImageFormat::Png | ImageFormat::Jpeg)) => f,
        Some(other) => return Err(bad(&format!("{other:?} is not accepted"))),
        None => return Err(bad(&"the bytes are no known image format")),
    };
    let (width, height) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| bad(&e))?;
    if width > MAX_UPLOAD_SIDE || height > MAX_UPLOAD_SIDE {
        return Err(SdError::invalid(
            field,
            format!(
                "the image is {width}x{height} pixels; at most {MAX_UPLOAD_SIDE}x{MAX_UPLOAD_SIDE} is accepted"
            ),
        ));
    }
    if width == 0 || height == 0 {
        return Err(SdError::invalid(
            field,
            format!("the image is {width}x{height} pixels"),
        ));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_UPLOAD_SIDE);
    limits.max_image_height = Some(MAX_UPLOAD_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    reader.decode().map_err(|e| bad(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRC-32 (IEEE) of a PNG chunk's type and data.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }

    /// A PNG of a few dozen bytes whose header declares `width` x `height` 8-bit RGB pixels.
    fn png_declaring(width: u32, height: u32) -> Vec<u8> {
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &ihdr);
        chunk(
            &mut out,
            b"IDAT",
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        );
        chunk(&mut out, b"IEND", &[]);
        out
    }

    #[test]
    fn a_small_png_declaring_a_huge_image_is_refused_from_its_header() {
        let png = png_declaring(50_000, 50_000);
        assert!(png.len() < 100);
        let err = decode_image(&png, "mask").unwrap_err();
        let SdError::Invalid { field, message } = &err else {
            panic!("expected an invalid-field error, got {err}");
        };
        assert_eq!(*field, "mask");
        assert!(message.contains("50000x50000"), "{message}");
        assert!(message.contains("4096x4096"), "{message}");
    }

    #[test]
    fn a_real_png_decodes_and_garbage_names_the_field() {
        let image = image::RgbImage::from_pixel(3, 2, image::Rgb([10, 20, 30]));
        let mut png = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        let decoded = decode_image(&png, "image").unwrap().to_rgb8();
        assert_eq!(decoded.dimensions(), (3, 2));
        assert_eq!(decoded.get_pixel(2, 1), &image::Rgb([10, 20, 30]));
        let err = decode_image(b"GIF89a not really", "image").unwrap_err();
        assert!(err.to_string().contains("not a PNG or JPEG"), "{err}");
        let truncated = &png[..png.len() / 2];
        assert!(decode_image(truncated, "image").is_err());
        assert!(decode_image(&png_declaring(0, 5), "image").is_err());
    }
}
