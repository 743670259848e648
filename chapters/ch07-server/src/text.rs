//! From token ids to the text a client sees: incremental detokenization (a token may end in the
//! middle of a UTF-8 character, so text is held back until it decodes cleanly) and stop strings
//! (text that might be the start of one is held back too; a match ends the sample there).
//!
//! Both are incremental, so a request of n tokens costs O(n) text work, not O(n²): the
//! detokenizer decodes only a short window of recent ids per token (prefix and read offsets, as
//! vLLM and TGI do), and the stop-string search looks only at the new text plus the last
//! (longest stop − 1) bytes before it, where a match could have started.

use crate::engine::Event;
use ch00_model::LoadedModel;
use ch00_serving::FinishReason;

/// Ids held back at most while their bytes do not make a character (UTF-8 needs at most 4).
const MAX_HELD_IDS: usize = 6;

// ANCHOR: detokenizer
/// Incremental detokenization of one sequence. `ids[prefix..read]` is the window of ids already
/// turned into text, decoded again only as context for the new ids (a tokenizer may render a
/// token differently at the start of a text, e.g. dropping its leading space); `ids[read..]` are
/// the ids whose text is not out yet (an unfinished UTF-8 character, say).
#[derive(Debug, Clone, Default)]
pub struct Detokenizer {
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl Detokenizer {
    /// Adds one id; returns the text it completes (often empty while a character is unfinished).
    pub fn push(&mut self, model: &LoadedModel, id: u32) -> ch00_model::Result<String> {
        self.ids.push(id);
        let before = model.decode(&self.ids[self.prefix..self.read])?;
        let now = model.decode(&self.ids[self.prefix..])?;
        // Ids that never complete a character (a model can emit invalid bytes) are let out as
        // U+FFFD after a few ids, so the window stays short.
        let stuck = self.ids.len() - self.read > MAX_HELD_IDS;
        if !stuck && (now.ends_with('\u{FFFD}') || now.len() <= before.len()) {
            return Ok(String::new()); // the new bytes do not make a character yet
        }
        let Some(new) = now.get(before.len()..) else {
            return Ok(String::new()); // the window renders differently; wait for more ids
        };
        let new = new.to_string();
        (self.prefix, self.read) = (self.read, self.ids.len());
        Ok(new)
    }

    /// Whatever text is still held back (the sequence is over): unfinished characters included.
    pub fn flush(&mut self, model: &LoadedModel) -> ch00_model::Result<String> {
        let before = model.decode(&self.ids[self.prefix..self.read])?;
        let now = model.decode(&self.ids[self.prefix..])?;
        (self.prefix, self.read) = (self.ids.len(), self.ids.len());
        Ok(now.get(before.len()..).unwrap_or_default().to_string())
    }

    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}
// ANCHOR_END: detokenizer

/// One sample's text so far.
#[derive(Debug, Clone, Default)]
struct SampleText {
    detok: Detokenizer,
    text: String,
    /// Bytes of `text` already sent to the client.
    sent: usize,
    finish: Option<&'static str>,
    /// Ended by a stop string (the engine has not finished it).
    stopped: bool,
}

/// What one engine event means for the client: new text (maybe empty) for sample `index`, and
/// whether that sample is now finished.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    pub index: usize,
    pub text: String,
    pub token_ids: Vec<u32>,
    pub finish: Option<&'static str>,
}

/// The earliest match of any of `stops` in `text` that ends after byte `new_from` (the text
/// before it was searched already): only the tail from `new_from - (longest - 1)` is searched.
pub fn find_stop(text: &str, new_from: usize, stops: &[String]) -> Option<usize> {
    let longest = stops.iter().map(String::len).max()?;
    let mut from = new_from.saturating_sub(longest.saturating_sub(1)).min(text.len());
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    stops.iter().filter_map(|p| text[from..].find(p.as_str())).min().map(|at| from + at)
}

// ANCHOR: assembler
/// Turns a request's engine events into text deltas.
pub struct Assembler<'a> {
    model: &'a LoadedModel,
    stops: Vec<String>,
    longest: usize,
    samples: Vec<SampleText>,
}

impl<'a> Assembler<'a> {
    pub fn new(model: &'a LoadedModel, n: usize, stops: Vec<String>) -> Self {
        let stops: Vec<String> = stops.into_iter().filter(|s| !s.is_empty()).collect();
        let longest = stops.iter().map(String::len).max().unwrap_or(0);
        Assembler { model, stops, longest, samples: vec![SampleText::default(); n] }
    }

    /// The delta for one event, `None` when the event says nothing new (a sample already ended
    /// by a stop string). An engine failure is an error.
    pub fn on_event(&mut self, ev: Event) -> Result<Option<Delta>, String> {
        let (index, token, reason) = match ev {
            Event::Token { sample, token } => (sample, Some(token), None),
            Event::Finished { sample, reason } => (sample, None, Some(reason)),
            Event::Failed(why) => return Err(why),
        };
        let Some(s) = self.samples.get_mut(index) else { return Err(format!("no sample {index}")) };
        if s.finish.is_some() {
            return Ok(None);
        }
        let old_len = s.text.len();
        if let Some(t) = token {
            let new = s.detok.push(self.model, t).map_err(|e| e.to_string())?;
            s.text += &new;
        }
        if reason.is_some() {
            let rest = s.detok.flush(self.model).map_err(|e| e.to_string())?;
            s.text += &rest;
        }
        if s.text.len() > old_len {
            if let Some(at) = find_stop(&s.text, old_len, &self.stops) {
                s.text.truncate(at);
                s.finish = Some("stop");
                s.stopped = true;
            }
        }
        if let Some(r) = reason.filter(|_| s.finish.is_none()) {
            s.finish = Some(match r {
                FinishReason::Eos => "stop",
                FinishReason::Length | FinishReason::ContextFull => "length",
            });
        }
        // Hold back anything that could still become a stop string.
        let mut end = s.text.len();
        if s.finish.is_none() {
            end = end.saturating_sub(self.longest.saturating_sub(1)).max(s.sent);
            while !s.text.is_char_boundary(end) {
                end -= 1;
            }
        }
        let text = s.text.get(s.sent..end).unwrap_or_default().to_string();
        s.sent = s.sent.max(end);
        Ok(Some(Delta { index, text, token_ids: token.into_iter().collect(), finish: s.finish }))
    }

    /// Every sample has finished (the engine's reason or a stop string).
    pub fn done(&self) -> bool {
        self.samples.iter().all(|s| s.finish.is_some())
    }

    /// Some sample was ended by a stop string, so the engine may still be running it.
    pub fn stopped_early(&self) -> bool {
        self.samples.iter().any(|s| s.stopped)
    }

    /// Tokens generated, over all samples.
    pub fn completion_tokens(&self) -> usize {
        self.samples.iter().map(|s| s.detok.ids().len()).sum()
    }

    /// Whole texts and finish reasons (non-streaming responses).
    pub fn texts(&self) -> Vec<(String, Vec<u32>, &'static str)> {
        self.samples.iter().map(|s| (s.text.clone(), s.detok.ids().to_vec(), s.finish.unwrap_or("length"))).collect()
    }
}
// ANCHOR_END: assembler

#[cfg(test)]
mod tests {
    use super::*;

    fn random() -> LoadedModel {
        ch00_model::load_model(None, Some("tiny")).unwrap()
    }

    #[test]
    fn a_stop_string_ends_the_sample_and_is_not_sent() {
        // The tiny model has no tokenizer: the text of ids 5 6 7 is "5 6 7".
        let m = random();
        let mut a = Assembler::new(&m, 1, vec!["6 7".into()]);
        let tok = |t| Event::Token { sample: 0, token: t };
        let mut sent = String::new();
        for t in [5, 6, 7, 8] {
            if let Some(d) = a.on_event(tok(t)).unwrap() {
                sent += &d.text;
            }
        }
        assert_eq!(sent, "5 ");
        assert!(a.done());
        assert_eq!(a.texts()[0].2, "stop");
    }

    #[test]
    fn stop_search_looks_at_the_tail_and_finds_matches_across_tokens() {
        let stops = vec!["END".to_string(), "xy".to_string()];
        // "EN" was searched already; "D" arrives: the match straddles the boundary.
        assert_eq!(find_stop("abc EN", 4, &stops), None);
        assert_eq!(find_stop("abc END", 6, &stops), Some(4));
        // A match wholly inside text searched before is not looked for again...
        assert_eq!(find_stop("xy and more", 11, &stops), None);
        // ... and the window respects UTF-8 boundaries.
        assert_eq!(find_stop("ééé xy", 7, &stops), Some(7));
        assert_eq!(find_stop("abc", 0, &[]), None);
    }

    /// The shipped tokenizer (byte-level BPE): pieces pushed one id at a time add up to the text
    /// of all the ids, multi-byte characters split across ids included.
    #[test]
    fn incremental_detokenization_equals_decoding_everything() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/shakespeare");
        let m = ch00_model::load_model(Some(&dir), None).unwrap();
        let text = "ROMEO: café — naïve ✓ 日本語 😀 and so, good night!\n  two  spaces";
        let mut ids = m.encode(text).unwrap();
        // And random ids: invalid byte sequences too.
        ids.extend((0..300u32).map(|i| (i * 7919 + 13) % m.model.config.vocab_size as u32));
        let mut d = Detokenizer::default();
        let mut out = String::new();
        for &id in &ids {
            let piece = d.push(&m, id).unwrap();
            out += &piece;
        }
        out += &d.flush(&m).unwrap();
        assert_eq!(out, m.decode(&ids).unwrap());
        assert!(out.contains("日本語 😀"), "{out:.80}");
    }

    #[test]
    fn the_engines_reason_finishes_and_flushes() {
        let m = random();
        let mut a = Assembler::new(&m, 2, vec!["zzz".into()]);
        let d = a.on_event(Event::Token { sample: 1, token: 42 }).unwrap().unwrap();
        assert_eq!(d.text, ""); // "42" might still grow into "zzz"... held back
        let d = a.on_event(Event::Finished { sample: 1, reason: FinishReason::Length }).unwrap().unwrap();
        assert_eq!((d.text.as_str(), d.finish), ("42", Some("length")));
        assert!(!a.done());
        assert!(a.on_event(Event::Failed("boom".into())).is_err());
    }
}
