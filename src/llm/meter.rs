//! Counting tokens of one exchange: from the upstream's `usage` when it reports one, otherwise
//! estimated (about four characters a token) from the request's messages and the answer's text.
//! For budgets, [`prompt_reserve`] is a deliberately high guess of a request's prompt tokens.

use serde_json::Value;

/// Tokens of one call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    pub prompt: u64,
    pub completion: u64,
    /// False when estimated rather than reported by the upstream.
    pub reported: bool,
}

impl Tokens {
    pub fn total(&self) -> u64 {
        self.prompt + self.completion
    }
}

/// Rough token count of a text.
pub fn estimate(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

/// Characters of a chat request's prompt: its messages' content and, when present, its tools.
fn prompt_chars(request: &Value) -> usize {
    let messages: usize = request["messages"]
        .as_array()
        .map(|msgs| {
            msgs.iter()
                .map(|m| match &m["content"] {
                    Value::String(s) => s.len(),
                    Value::Null => 0,
                    other => other.to_string().len(),
                })
                .sum()
        })
        .unwrap_or(0);
    let tools = match &request["tools"] {
        Value::Null => 0,
        tools => tools.to_string().len(),
    };
    messages + tools
}

/// Estimated prompt tokens of a chat request.
pub fn prompt_estimate(request: &Value) -> u64 {
    estimate(prompt_chars(request))
}

/// What a chat template may add to a call beyond its messages: a default system prompt
/// (SmolLM2's adds 19 tokens to a one-line question, measured against llama-server).
pub const TEMPLATE_ALLOWANCE: u64 = 32;

/// A high guess of a request's prompt tokens, for reserving budget before the call: a token for
/// every three characters (code and non-English text run denser than four), 8 more a message
/// for the chat template's markers, and [`TEMPLATE_ALLOWANCE`] for a default system prompt.
pub fn prompt_reserve(request: &Value) -> u64 {
    let messages = request["messages"].as_array().map_or(0, Vec::len) as u64;
    (prompt_chars(request) as u64).div_ceil(3) + 8 * messages + TEMPLATE_ALLOWANCE
}

fn usage_of(v: &Value) -> Option<(u64, u64)> {
    let u = v.get("usage")?;
    Some((
        u["prompt_tokens"].as_u64()?,
        u["completion_tokens"].as_u64().unwrap_or(0),
    ))
}

/// Characters of generated text in one choice of an answer (`message`) or a stream event
/// (`delta`): content, reasoning and tool-call arguments.
fn generated_chars(part: &Value) -> usize {
    let text = |v: &Value| v.as_str().map_or(0, str::len);
    let tools: usize = part["tool_calls"].as_array().map_or(0, |calls| {
        calls
            .iter()
            .map(|c| text(&c["function"]["arguments"]))
            .sum()
    });
    text(&part["content"]) + text(&part["reasoning_content"]) + tools
}

/// Tokens of a complete (non-streamed) answer.
pub fn from_body(request: &Value, body: &[u8]) -> Tokens {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if let Some((prompt, completion)) = usage_of(&parsed) {
        return Tokens {
            prompt,
            completion,
            reported: true,
        };
    }
    let text: usize = parsed["choices"]
        .as_array()
        .map(|cs| cs.iter().map(|c| generated_chars(&c["message"])).sum())
        .unwrap_or(0);
    Tokens {
        prompt: prompt_estimate(request),
        completion: estimate(text),
        reported: false,
    }
}

/// Watches a server-sent-events stream go by, counts its tokens, and passes it on: unchanged,
/// or without the usage-only event when the gateway asked for usage the client did not
/// ([`StreamMeter::stripping_usage`]).
#[derive(Debug, Default)]
pub struct StreamMeter {
    /// Bytes of an incomplete line carried to the next chunk.
    partial: Vec<u8>,
    content_chars: usize,
    usage: Option<(u64, u64)>,
    /// Drop events that carry only usage (no choices) from what is passed on.
    strip_usage: bool,
    /// A dropped event's data line was seen: its blank end line is dropped too.
    dropping: bool,
    /// `data: [DONE]` went by.
    done: bool,
    /// The last line as it is to be passed on, when that differs from how it came.
    rewritten: Option<Vec<u8>>,
}

/// A line as text, with its line end.
fn raw_line(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

impl StreamMeter {
    /// A meter that removes the usage-only event from the stream it passes on.
    pub fn stripping_usage() -> StreamMeter {
        StreamMeter {
            strip_usage: true,
            ..StreamMeter::default()
        }
    }

    /// Takes the next chunk from the upstream and returns what to pass on: the chunk itself,
    /// or (when stripping) its complete lines less the usage-only event.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.partial.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(pos) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=pos).collect();
            if self.line(&line) {
                match self.rewritten.take() {
                    Some(bare) => out.extend_from_slice(&bare),
                    None => out.extend_from_slice(&line),
                }
            }
        }
        // A line longer than any sane event is not buffered without bound.
        if self.partial.len() > 1 << 20 {
            out.append(&mut self.partial);
        }
        if self.strip_usage {
            out
        } else {
            chunk.to_vec()
        }
    }

    /// What is left to pass on once the upstream's stream has ended: an unterminated last line
    /// held back while stripping (nothing otherwise: it was passed on as it came).
    pub fn rest(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.partial);
        if rest.is_empty() || !self.line(&rest) || !self.strip_usage {
            return Vec::new();
        }
        self.rewritten.take().unwrap_or(rest)
    }

    /// Whether `data: [DONE]` went by.
    pub fn done(&self) -> bool {
        self.done
    }

    /// Completion tokens so far, estimated from the text that went by.
    pub fn completion_so_far(&self) -> u64 {
        estimate(self.content_chars)
    }

    /// Counts one line; false when it is to be dropped from what is passed on.
    fn line(&mut self, raw: &[u8]) -> bool {
        let line = String::from_utf8_lossy(raw);
        let line = line.trim();
        if line.is_empty() {
            return !std::mem::take(&mut self.dropping);
        }
        let Some(data) = line.strip_prefix("data:") else {
            return true;
        };
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return true;
        }
        let Ok(event) = serde_json::from_str::<Value>(data) else {
            return true;
        };
        let usage = usage_of(&event);
        if usage.is_some() {
            self.usage = usage;
        }
        let choices = event["choices"].as_array();
        for c in choices.into_iter().flatten() {
            self.content_chars += generated_chars(&c["delta"]);
        }
        let usage_only = usage.is_some() && choices.is_none_or(Vec::is_empty);
        if self.strip_usage && usage_only {
            self.dropping = true;
            return false;
        }
        if self.strip_usage && event.get("usage") == Some(&Value::Null) {
            // `"usage":null`, which servers add to every event once usage is asked for.
            let bare = raw_line(raw).replacen(",\"usage\":null", "", 1);
            self.rewritten = Some(bare.into_bytes());
        }
        true
    }

    /// The tokens counted so far (the whole call once the stream has ended).
    /// Without the upstream's usage, the prompt counts as `prompt_estimate`.
    pub fn tokens(&mut self, prompt_estimate: u64) -> Tokens {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.line(&rest);
        }
        match self.usage {
            Some((prompt, completion)) => Tokens {
                prompt,
                completion,
                reported: true,
            },
            None => Tokens {
                prompt: prompt_estimate,
                completion: estimate(self.content_chars),
                reported: false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reported_usage_wins() {
        let body = br#"{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":12,"completion_tokens":3}}"#;
        assert_eq!(
            from_body(&json!({}), body),
            Tokens {
                prompt: 12,
                completion: 3,
                reported: true
            }
        );
    }

    #[test]
    fn missing_usage_is_estimated_from_text() {
        let req = json!({"messages": [{"role": "user", "content": "12345678"}]});
        let body = br#"{"choices":[{"message":{"content":"abcd"}}]}"#;
        assert_eq!(
            from_body(&req, body),
            Tokens {
                prompt: 2,
                completion: 1,
                reported: false
            }
        );
    }

    #[test]
    fn stream_is_counted_across_chunk_boundaries() {
        let mut m = StreamMeter::default();
        m.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"abcd\"}}]}\n\nda");
        m.feed(b"ta: {\"choices\":[{\"delta\":{\"content\":\"efgh\"}}]}\n\ndata: [DONE]\n\n");
        assert_eq!(m.tokens(0).completion, 2);
    }

    /// What real servers send with `stream_options.include_usage`: a first event with only a
    /// role and `content: null`, `usage: null` on content events, extra fields, and the usage in
    /// an event of its own with empty `choices`.
    const REAL_STREAM: &str = concat!(
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello there\"},\"finish_reason\":null}],\"system_fingerprint\":\"b1\",\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":21,\"completion_tokens\":3,\"total_tokens\":24},\"timings\":{}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn a_real_servers_stream_is_metered_from_its_usage_event() {
        let mut m = StreamMeter::default();
        // In pieces that cut lines anywhere.
        let mut passed = Vec::new();
        for piece in REAL_STREAM.as_bytes().chunks(7) {
            passed.extend(m.feed(piece));
        }
        assert_eq!(passed, REAL_STREAM.as_bytes(), "passed on unchanged");
        assert!(m.done());
        assert_eq!(
            m.tokens(0),
            Tokens {
                prompt: 21,
                completion: 3,
                reported: true
            }
        );
    }

    #[test]
    fn the_usage_event_the_client_did_not_ask_for_is_removed_and_nothing_else() {
        let mut m = StreamMeter::stripping_usage();
        let mut passed = Vec::new();
        for piece in REAL_STREAM.as_bytes().chunks(5) {
            passed.extend(m.feed(piece));
        }
        passed.extend(m.rest());
        let usage_event = REAL_STREAM.split_inclusive("\n\n").nth(3).unwrap();
        assert_eq!(
            String::from_utf8(passed).unwrap(),
            REAL_STREAM
                .replace(usage_event, "")
                .replace(",\"usage\":null", ""),
            "as the server sends it to a client that does not ask for usage"
        );
        assert_eq!(m.tokens(0).completion, 3);
    }

    #[test]
    fn a_stream_cut_short_counts_the_text_received() {
        let mut m = StreamMeter::default();
        m.feed(
            REAL_STREAM
                .split_inclusive("\n\n")
                .nth(1)
                .unwrap()
                .as_bytes(),
        );
        assert!(!m.done());
        let req = json!({"messages": [{"role": "user", "content": "12345678"}]});
        assert_eq!(
            m.tokens(prompt_estimate(&req)),
            Tokens {
                prompt: 2,
                completion: 3,
                reported: false
            }
        );
    }

    #[test]
    fn the_prompt_reserve_is_above_the_estimate() {
        let req = json!({"messages": [{"role": "user", "content": "x".repeat(300)}]});
        assert_eq!(prompt_estimate(&req), 75);
        assert_eq!(prompt_reserve(&req), 108 + TEMPLATE_ALLOWANCE);
    }

    #[test]
    fn stream_usage_chunk_is_used() {
        let mut m = StreamMeter::default();
        m.feed(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":9}}\n");
        assert_eq!(
            m.tokens(0),
            Tokens {
                prompt: 7,
                completion: 9,
                reported: true
            }
        );
    }
}
