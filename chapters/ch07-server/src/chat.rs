//! Chat: the checkpoint's own Jinja template (`chat_template` in `tokenizer_config.json`) turns
//! the messages into one prompt, rendered with minijinja as transformers renders it with Jinja2.

use crate::api::Message;
use ch00_model::LoadedModel;
use std::path::Path;

/// A checkpoint's chat template and the special tokens it refers to.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    pub template: String,
    pub bos_token: String,
    pub eos_token: String,
}

impl ChatTemplate {
    /// The template of checkpoint `dir`, if its `tokenizer_config.json` has one.
    pub fn from_dir(dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = dir.join("tokenizer_config.json");
        if !path.exists() {
            return Ok(None);
        }
        let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        let token = |k: &str| match &cfg[k] {
            serde_json::Value::String(s) => s.clone(),
            v => v["content"].as_str().unwrap_or_default().to_string(), // {"content": "<s>", ...}
        };
        Ok(cfg["chat_template"].as_str().map(|t| ChatTemplate {
            template: t.to_string(),
            bos_token: token("bos_token"),
            eos_token: token("eos_token"),
        }))
    }

    // ANCHOR: render
    /// The prompt text for `messages`, ending where the assistant's answer begins.
    pub fn render(&self, messages: &[Message]) -> Result<String, String> {
        let mut env = minijinja::Environment::new();
        env.add_template("chat", &self.template).map_err(|e| format!("chat template: {e}"))?;
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        };
        env.get_template("chat").and_then(|t| t.render(ctx)).map_err(|e| format!("chat template: {e}"))
    }
    // ANCHOR_END: render

    /// Token ids of a rendered prompt: the template wrote the special tokens itself, so the
    /// tokenizer adds none (as vLLM does for chat).
    pub fn encode(&self, model: &LoadedModel, text: &str) -> ch00_model::Result<Vec<u32>> {
        match &model.tokenizer {
            Some(tok) => tok.encode_raw(text),
            None => model.encode(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_messages_with_the_generation_prompt() {
        let t = ChatTemplate {
            template: "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}".into(),
            bos_token: "<s>".into(),
            eos_token: "</s>".into(),
        };
        let msgs = [Message { role: "user".into(), content: "hi".into() }];
        assert_eq!(t.render(&msgs).unwrap(), "<s><user>hi\n<assistant>");
        let bad = ChatTemplate { template: "{% for %}".into(), ..t };
        assert!(bad.render(&msgs).unwrap_err().contains("chat template"));
    }
}
