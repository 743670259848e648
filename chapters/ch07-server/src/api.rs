//! The OpenAI wire format: what clients send to `/v1/completions` and `/v1/chat/completions`, and
//! what they get back. A known field of the wrong type is a 400; so is a field of OpenAI's API
//! this server does not implement (`logprobs`, `echo`, ...) set to anything but its default
//! ([`SamplingFields::unsupported`]). Fields OpenAI's API does not have are ignored.

use serde::{Deserialize, Serialize};

/// A prompt: text, or token ids (as OpenAI's API allows; the load generator sends ids).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

/// One stop string or several.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn strings(&self) -> Vec<String> {
        match self {
            Stop::None => Vec::new(),
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

// ANCHOR: completion_request
/// The sampling fields both endpoints share.
#[derive(Debug, Clone, Deserialize)]
pub struct SamplingFields {
    /// OpenAI's default is 16.
    pub max_tokens: Option<usize>,
    /// OpenAI's default is 1.0 (sampling); 0 is greedy.
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    #[serde(default)]
    pub stop: Stop,
    pub n: Option<usize>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    /// vLLM's extension: keep going past EOS (benchmarks fix output lengths this way).
    #[serde(default)]
    pub ignore_eos: bool,
    /// Extension: put each chunk's token ids in `choices[i].token_ids`.
    #[serde(default)]
    pub return_token_ids: bool,
    // Fields of OpenAI's API that this server does not implement.
    pub logprobs: Option<serde_json::Value>,
    pub top_logprobs: Option<serde_json::Value>,
    pub echo: Option<bool>,
    pub suffix: Option<String>,
    pub best_of: Option<usize>,
    pub logit_bias: Option<serde_json::Map<String, serde_json::Value>>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
}

impl SamplingFields {
    /// The first field set to something this server would have to ignore: its name and why.
    pub fn unsupported(&self) -> Option<(&'static str, &'static str)> {
        let on = |v: &Option<serde_json::Value>| v.as_ref().is_some_and(|v| !v.is_null() && *v != false && *v != 0);
        if on(&self.logprobs) || on(&self.top_logprobs) {
            let which = if on(&self.logprobs) { "logprobs" } else { "top_logprobs" };
            return Some((which, "the engines return sampled tokens, not their log probabilities"));
        }
        if self.echo == Some(true) {
            return Some(("echo", "the completion does not repeat the prompt"));
        }
        if self.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
            return Some(("suffix", "no insertion mode"));
        }
        if self.best_of.is_some_and(|b| b > 1) {
            return Some(("best_of", "use `n` for several samples"));
        }
        if self.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
            return Some(("logit_bias", "the samplers take no bias"));
        }
        if self.presence_penalty.is_some_and(|p| p != 0.0) {
            return Some(("presence_penalty", "the samplers apply no penalties"));
        }
        if self.frequency_penalty.is_some_and(|p| p != 0.0) {
            return Some(("frequency_penalty", "the samplers apply no penalties"));
        }
        None
    }
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: Prompt,
    #[serde(flatten)]
    pub sampling: SamplingFields,
}
// ANCHOR_END: completion_request

/// One message of a conversation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Vec<Message>,
    #[serde(flatten)]
    pub sampling: SamplingFields,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

/// A choice of a completion (whole, or one streamed piece of it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Choice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<()>,
    pub finish_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub token_ids: Option<Vec<u32>>,
}

/// A completion, or (streaming) one chunk of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Completion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub usage: Option<Usage>,
}

/// A chat choice: `message` when whole, `delta` when streamed.
#[derive(Debug, Clone, Serialize)]
pub struct ChatChoice {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<serde_json::Value>,
    pub logprobs: Option<()>,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}
