//! Turning sampled tokens into text that is safe to show as it arrives: UTF-8 characters split over tokens
//! are held until whole, and text that could still become a stop string is held until ruled out.

use crate::error::Result;

/// Decodes a growing token sequence piece by piece, emitting only complete characters.
///
/// Decoding token by token breaks multi-byte characters and loses the spaces some decoders strip at a
/// sequence start; this keeps a short window (`prefix_offset..`) and emits the difference between the
/// window decoded with and without the newest tokens, as text-generation-inference does.
#[derive(Debug, Default)]
pub(crate) struct IncrementalDecoder {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl IncrementalDecoder {
    /// Adds a token and returns the text it completes (possibly empty).
    pub(crate) fn push(&mut self, id: u32, decode: impl Fn(&[u32]) -> Result<String>) -> Result<String> {
        self.ids.push(id);
        let prefix = decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let full = decode(&self.ids[self.prefix_offset..])?;
        if full.len() <= prefix.len() || full.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let new = match full.get(prefix.len()..) {
            Some(tail) if full.starts_with(&prefix) => tail.to_string(),
            // The decoder rewrote earlier text (rare): emit what differs from the prefix, char-safely.
            _ => full.chars().skip(prefix.chars().count()).collect(),
        };
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        Ok(new)
    }

    /// Text still held at the end of the generation (an incomplete character decodes as U+FFFD).
    pub(crate) fn finish(&mut self, decode: impl Fn(&[u32]) -> Result<String>) -> Result<String> {
        let prefix = decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let full = decode(&self.ids[self.prefix_offset..])?;
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        Ok(full.get(prefix.len()..).unwrap_or_default().to_string())
    }
}

/// What the stop-string filter decided for a piece of text.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StopStep {
    /// Text that can be shown; generation goes on.
    Emit(String),
    /// A stop string was found: the text before it, and generation ends.
    Stopped(String),
}

/// Holds back text that may be the beginning of a stop string.
#[derive(Debug)]
pub(crate) struct StopFilter {
    stops: Vec<String>,
    pending: String,
}

impl StopFilter {
    pub(crate) fn new(stops: &[String]) -> Self {
        StopFilter {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Adds decoded text; returns what can be shown now, or the text before a stop string.
    pub(crate) fn push(&mut self, text: &str) -> StopStep {
        self.pending.push_str(text);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            let before = self.pending[..at].to_string();
            self.pending.clear();
            return StopStep::Stopped(before);
        }
        let hold = self
            .stops
            .iter()
            .map(|s| partial_suffix(&self.pending, s))
            .max()
            .unwrap_or(0);
        let emit_to = self.pending.len() - hold;
        let emit = self.pending[..emit_to].to_string();
        self.pending.drain(..emit_to);
        StopStep::Emit(emit)
    }

    /// The text held back when generation ends without a stop string.
    pub(crate) fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// Length of the longest proper prefix of `stop` that `text` ends with.
fn partial_suffix(text: &str, stop: &str) -> usize {
    (1..stop.len())
        .rev()
        .filter(|&k| stop.is_char_boundary(k))
        .find(|&k| text.ends_with(&stop[..k]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte-level "tokenizer": each id is one byte, decoded lossily like a BPE decoder does.
    fn bytes(ids: &[u32]) -> Result<String> {
        Ok(String::from_utf8_lossy(&ids.iter().map(|&i| i as u8).collect::<Vec<_>>()).into_owned())
    }

    #[test]
    fn multibyte_characters_are_emitted_only_when_complete() {
        let mut d = IncrementalDecoder::default();
        let mut out = Vec::new();
        for b in "aé€!".bytes() {
            out.push(d.push(b as u32, bytes).unwrap());
        }
        assert_eq!(out, ["a", "", "é", "", "", "€", "!"]);
        assert_eq!(d.finish(bytes).unwrap(), "");
    }

    #[test]
    fn an_unfinished_character_at_the_end_is_flushed_as_replacement() {
        let mut d = IncrementalDecoder::default();
        assert_eq!(d.push(b'x' as u32, bytes).unwrap(), "x");
        assert_eq!(d.push(0xE2, bytes).unwrap(), "");
        assert_eq!(d.finish(bytes).unwrap(), "\u{FFFD}");
    }

    #[test]
    fn stop_string_split_over_pieces_is_never_emitted() {
        let mut f = StopFilter::new(&["</end>".to_string()]);
        assert_eq!(f.push("Hello <"), StopStep::Emit("Hello ".into()));
        assert_eq!(f.push("/en"), StopStep::Emit("".into()));
        assert_eq!(f.push("d> tail"), StopStep::Stopped("".into()));
    }

    #[test]
    fn held_text_is_released_when_it_stops_matching() {
        let mut f = StopFilter::new(&["ab".to_string(), "xyz".to_string()]);
        assert_eq!(f.push("1a"), StopStep::Emit("1".into()));
        assert_eq!(f.push("c x"), StopStep::Emit("ac ".into()));
        assert_eq!(f.push("y"), StopStep::Emit("".into()));
        assert_eq!(f.finish(), "xy");
    }

    #[test]
    fn the_earliest_stop_string_wins() {
        let mut f = StopFilter::new(&["cd".to_string(), "b".to_string()]);
        assert_eq!(f.push("abcd"), StopStep::Stopped("a".into()));
    }
}
