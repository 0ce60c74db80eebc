//! GGUF header reading: the metadata key/values at the start of a llama.cpp model file, from a byte prefix.
//!
//! Our own small parser rather than candle's or gguf-rs-lib's: candle's `gguf_file::Content::read` needs a
//! `Read + Seek` over the whole file and reads the tensor table too, and neither tells a caller reading by
//! HTTP Range how many more bytes it needs. This one works on any prefix, answers
//! [`GgufError::Truncated`] with the number of bytes it needs, refuses absurd lengths before allocating,
//! and uses no I/O, so the wasm build runs it on what the browser fetched.

use std::collections::BTreeMap;

use artifacts_contract::{LlmConfig, ModelFamily, TokenizerInfo, WeightFormat};

/// The largest metadata a real GGUF header carries is a few tens of MB (vocabularies and merges).
const MAX_METADATA_BYTES: u64 = 256 << 20;
/// More keys than any real file has; a larger count means the header is corrupt.
const MAX_KV_COUNT: u64 = 1 << 20;
/// More elements than any vocabulary or merge list has.
const MAX_ARRAY_LEN: u64 = 16 << 20;

/// Why a byte prefix could not be read as a GGUF header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GgufError {
    /// The prefix ends before the header does; read at least `needed` bytes from the start and retry.
    #[error("the GGUF header is truncated: at least {needed} bytes are needed, {have} were given")]
    Truncated {
        /// Bytes from the start of the file needed to go further.
        needed: u64,
        /// Bytes given.
        have: u64,
    },
    /// The file does not start with the `GGUF` magic.
    #[error("not a GGUF file: it does not start with the GGUF magic bytes")]
    BadMagic,
    /// A version this parser does not read (1, big-endian files, future versions).
    #[error("unsupported GGUF version {0}: only versions 2 and 3 (little-endian) are read")]
    Version(u32),
    /// A length or count so large the header must be corrupt or hostile.
    #[error("the GGUF header claims {claimed} for {what}; refusing to read a header that large")]
    Absurd {
        /// What the length is of.
        what: String,
        /// The claimed size, in words ("12.0 GB of metadata", "40000000 keys").
        claimed: String,
    },
    /// A value type id outside the specification.
    #[error("unknown GGUF value type {kind} for key {key:?}")]
    ValueType {
        /// The key being read.
        key: String,
        /// The type id found.
        kind: u32,
    },
    /// A string that is not UTF-8.
    #[error("a GGUF string at byte {0} is not valid UTF-8")]
    Utf8(u64),
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// Any unsigned integer type.
    Uint(u64),
    /// Any signed integer type.
    Int(i64),
    /// `f32` or `f64`.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string.
    String(String),
    /// An array of values of one type.
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The value as an unsigned integer, when it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::Uint(v) => Some(v),
            GgufValue::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }
}

/// The parsed header: version, tensor count and every metadata key/value.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufHeader {
    /// Format version (2 or 3).
    pub version: u32,
    /// Number of tensors the file declares.
    pub tensor_count: u64,
    /// Metadata by key.
    pub metadata: BTreeMap<String, GgufValue>,
    /// Bytes from the start of the file to the end of the metadata.
    pub metadata_end: u64,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], GgufError> {
        let end = (self.pos as u64).saturating_add(n);
        if end > self.bytes.len() as u64 {
            return Err(GgufError::Truncated {
                needed: end,
                have: self.bytes.len() as u64,
            });
        }
        let slice = &self.bytes[self.pos..end as usize];
        self.pos = end as usize;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64)?);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self, what: impl FnOnce() -> String) -> Result<String, GgufError> {
        let len = self.u64()?;
        if len > MAX_METADATA_BYTES {
            return Err(GgufError::Absurd {
                what: what(),
                claimed: format_bytes(len),
            });
        }
        let start = self.pos as u64;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::Utf8(start))
    }

    fn value(&mut self, kind: u32, key: &str) -> Result<GgufValue, GgufError> {
        Ok(match kind {
            0 => GgufValue::Uint(u64::from(self.array::<1>()?[0])),
            1 => GgufValue::Int(i64::from(i8::from_le_bytes(self.array()?))),
            2 => GgufValue::Uint(u64::from(u16::from_le_bytes(self.array()?))),
            3 => GgufValue::Int(i64::from(i16::from_le_bytes(self.array()?))),
            4 => GgufValue::Uint(u64::from(self.u32()?)),
            5 => GgufValue::Int(i64::from(i32::from_le_bytes(self.array()?))),
            6 => GgufValue::Float(f64::from(f32::from_le_bytes(self.array()?))),
            7 => GgufValue::Bool(self.array::<1>()?[0] != 0),
            8 => GgufValue::String(self.string(|| format!("the string value of {key:?}"))?),
            9 => {
                let elem = self.u32()?;
                let len = self.u64()?;
                if len > MAX_ARRAY_LEN {
                    return Err(GgufError::Absurd {
                        what: format!("the array {key:?}"),
                        claimed: format!("{len} elements"),
                    });
                }
                if elem == 9 {
                    return Err(GgufError::ValueType {
                        key: key.to_string(),
                        kind: elem,
                    });
                }
                let mut items = Vec::with_capacity(len.min(4096) as usize);
                for _ in 0..len {
                    items.push(self.value(elem, key)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::Uint(self.u64()?),
            11 => GgufValue::Int(i64::from_le_bytes(self.array()?)),
            12 => GgufValue::Float(f64::from_le_bytes(self.array()?)),
            other => {
                return Err(GgufError::ValueType {
                    key: key.to_string(),
                    kind: other,
                });
            }
        })
    }
}

fn format_bytes(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.1} GB of metadata", n as f64 / f64::from(1u32 << 30))
    } else {
        format!("{:.1} MB of metadata", n as f64 / f64::from(1u32 << 20))
    }
}

/// Bytes to fetch first when reading a header over HTTP: enough for most files without a vocabulary.
pub const FIRST_READ_BYTES: u64 = 1 << 20;

/// How many bytes to fetch next after [`GgufError::Truncated`]: at least what is needed, and double what
/// was read, so a large vocabulary costs a few requests rather than hundreds.
pub fn next_read_size(err: &GgufError) -> Option<u64> {
    match err {
        GgufError::Truncated { needed, have } => Some((*needed).max(have.saturating_mul(2))),
        _ => None,
    }
}

/// Parses the header from a prefix of a GGUF file (the whole file works too).
pub fn parse_header(bytes: &[u8]) -> Result<GgufHeader, GgufError> {
    let mut r = Reader { bytes, pos: 0 };
    if r.array::<4>()? != *b"GGUF" {
        return Err(GgufError::BadMagic);
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::Version(version));
    }
    let tensor_count = r.u64()?;
    let kv_count = r.u64()?;
    if kv_count > MAX_KV_COUNT {
        return Err(GgufError::Absurd {
            what: "the metadata".into(),
            claimed: format!("{kv_count} keys"),
        });
    }
    let mut metadata = BTreeMap::new();
    for _ in 0..kv_count {
        let key = r.string(|| "a metadata key".into())?;
        let kind = r.u32()?;
        let value = r.value(kind, &key)?;
        metadata.insert(key, value);
        if r.pos as u64 > MAX_METADATA_BYTES {
            return Err(GgufError::Absurd {
                what: "the header".into(),
                claimed: format_bytes(r.pos as u64),
            });
        }
    }
    Ok(GgufHeader {
        version,
        tensor_count,
        metadata,
        metadata_end: r.pos as u64,
    })
}

/// llama.cpp's `llama_ftype` names, by `general.file_type` value.
pub fn file_type_name(file_type: u64) -> Option<&'static str> {
    Some(match file_type {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        _ => return None,
    })
}

impl GgufHeader {
    fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    fn u32_of(&self, key: &str) -> Option<u32> {
        self.get(key)?.as_u64().and_then(|v| u32::try_from(v).ok())
    }

    fn str_of(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    /// `general.architecture` (`llama`, `qwen2`...).
    pub fn architecture(&self) -> Option<&str> {
        self.str_of("general.architecture")
    }

    /// `general.name`, the model's display name.
    pub fn name(&self) -> Option<&str> {
        self.str_of("general.name")
    }

    /// The quantization as llama.cpp names it (`Q4_K_M`), from `general.file_type`.
    pub fn quantization(&self) -> Option<&'static str> {
        self.get("general.file_type")?.as_u64().and_then(file_type_name)
    }

    fn token_text(&self, id: u32) -> Option<String> {
        match self.get("tokenizer.ggml.tokens")? {
            GgufValue::Array(tokens) => tokens.get(id as usize)?.as_str().map(str::to_string),
            _ => None,
        }
    }

    /// The typed LLM config this header describes (architecture, sizes, tokens, chat template).
    pub fn llm_config(&self) -> LlmConfig {
        let arch = self.architecture().unwrap_or("").to_string();
        let mut c = LlmConfig::new(ModelFamily::from_architecture(&arch), WeightFormat::Gguf);
        let k = |suffix: &str| format!("{arch}.{suffix}");
        c.context_length = self.u32_of(&k("context_length"));
        c.num_layers = self.u32_of(&k("block_count"));
        c.hidden_size = self.u32_of(&k("embedding_length"));
        c.num_attention_heads = self.u32_of(&k("attention.head_count"));
        c.num_kv_heads = self.u32_of(&k("attention.head_count_kv"));
        c.vocab_size = self
            .u32_of(&k("vocab_size"))
            .or_else(|| match self.get("tokenizer.ggml.tokens") {
                Some(GgufValue::Array(t)) => u32::try_from(t.len()).ok(),
                _ => None,
            });
        c.quantization = self.quantization().map(str::to_string);
        c.parameter_count = if self.tensor_count == 0 {
            // A vocabulary-only file: nothing for a worker to run, whatever the metadata claims.
            Some(0)
        } else {
            self.get("general.parameter_count").and_then(GgufValue::as_u64)
        };
        c.license = self.str_of("general.license").map(str::to_string);
        c.base_model = self.str_of("general.base_model.0.name").map(str::to_string);
        if !arch.is_empty() {
            c.architecture = arch.clone();
        }
        let bos_id = self.u32_of("tokenizer.ggml.bos_token_id");
        let eos_id = self.u32_of("tokenizer.ggml.eos_token_id");
        c.tokenizer = TokenizerInfo {
            bos: bos_id.and_then(|id| self.token_text(id)),
            eos: eos_id.and_then(|id| self.token_text(id)).into_iter().collect(),
            pad: self
                .u32_of("tokenizer.ggml.padding_token_id")
                .and_then(|id| self.token_text(id)),
            unk: self
                .u32_of("tokenizer.ggml.unknown_token_id")
                .and_then(|id| self.token_text(id)),
            bos_id,
            eos_ids: eos_id.into_iter().collect(),
            add_bos_token: match self.get("tokenizer.ggml.add_bos_token") {
                Some(GgufValue::Bool(b)) => Some(*b),
                _ => None,
            },
            chat_template: self.str_of("tokenizer.chat_template").map(str::to_string),
        };
        c
    }
}

/// Builds GGUF bytes from metadata, for tests and the committed demo fixture: the inverse of
/// [`parse_header`] for the value types it emits (no tensors are written beyond the declared count).
pub fn write_header(metadata: &[(&str, GgufValue)], tensor_count: u64) -> Vec<u8> {
    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    fn kind(v: &GgufValue) -> u32 {
        match v {
            GgufValue::Uint(_) => 4,
            GgufValue::Int(_) => 5,
            GgufValue::Float(_) => 6,
            GgufValue::Bool(_) => 7,
            GgufValue::String(_) => 8,
            GgufValue::Array(_) => 9,
        }
    }
    fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
        match v {
            GgufValue::Uint(x) => out.extend_from_slice(&(*x as u32).to_le_bytes()),
            GgufValue::Int(x) => out.extend_from_slice(&(*x as i32).to_le_bytes()),
            GgufValue::Float(x) => out.extend_from_slice(&(*x as f32).to_le_bytes()),
            GgufValue::Bool(b) => out.push(u8::from(*b)),
            GgufValue::String(s) => put_str(out, s),
            GgufValue::Array(items) => {
                let elem = items.first().map(kind).unwrap_or(8);
                out.extend_from_slice(&elem.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for item in items {
                    put_value(out, item);
                }
            }
        }
    }
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&tensor_count.to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_str(&mut out, key);
        out.extend_from_slice(&kind(value).to_le_bytes());
        put_value(&mut out, value);
    }
    out
}

#[cfg(test)]
mod tests;
