//! From token ids to the text a client sees: incremental detokenization (a token may end in the
//! middle of a UTF-8 character, so text is held back until it decodes cleanly) and stop strings
//! (text that might be the start of one is held back too; a match ends the sample there).

use crate::engine::Event;
use ch00_model::{FinishReason, LoadedModel};

/// One sample's text so far.
#[derive(Debug, Clone, Default)]
struct SampleText {
    ids: Vec<u32>,
    text: String,
    /// Bytes of `text` already sent to the client.
    sent: usize,
    finish: Option<&'static str>,
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

// ANCHOR: assembler
/// Turns a request's engine events into text deltas.
pub struct Assembler<'a> {
    model: &'a LoadedModel,
    stops: Vec<String>,
    samples: Vec<SampleText>,
}

impl<'a> Assembler<'a> {
    pub fn new(model: &'a LoadedModel, n: usize, stops: Vec<String>) -> Self {
        let stops = stops.into_iter().filter(|s| !s.is_empty()).collect();
        Assembler { model, stops, samples: vec![SampleText::default(); n] }
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
        if let Some(t) = token {
            s.ids.push(t);
            s.text = self.model.decode(&s.ids).map_err(|e| e.to_string())?;
            if let Some(at) = self.stops.iter().filter_map(|p| s.text.find(p.as_str())).min() {
                s.text.truncate(at);
                s.finish = Some("stop");
            }
        }
        if let Some(r) = reason {
            s.finish = Some(match r {
                FinishReason::Eos => "stop",
                FinishReason::Length | FinishReason::ContextFull => "length",
            });
        }
        // Hold back an unfinished character, and anything that could still become a stop string.
        let mut end = s.text.len();
        if s.finish.is_none() {
            if s.text.ends_with('\u{FFFD}') {
                end -= '\u{FFFD}'.len_utf8();
            }
            let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
            end = end.saturating_sub(longest.saturating_sub(1)).max(s.sent);
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

    /// Tokens generated, over all samples.
    pub fn completion_tokens(&self) -> usize {
        self.samples.iter().map(|s| s.ids.len()).sum()
    }

    /// Whole texts and finish reasons (non-streaming responses).
    pub fn texts(&self) -> Vec<(String, Vec<u32>, &'static str)> {
        self.samples.iter().map(|s| (s.text.clone(), s.ids.clone(), s.finish.unwrap_or("length"))).collect()
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
