//! Counting tokens of one exchange: from the response's `usage` when it has one, otherwise
//! estimated (about four characters a token) from the request's messages and the answer's text.

use serde_json::Value;

/// Tokens of one call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    pub prompt: u64,
    pub completion: u64,
    /// False when estimated rather than reported by the upstream.
    pub reported: bool,
}

/// Rough token count of a text.
pub fn estimate(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

/// Estimated prompt tokens of a chat request.
pub fn prompt_estimate(request: &Value) -> u64 {
    let chars: usize = request["messages"]
        .as_array()
        .map(|msgs| {
            msgs.iter()
                .map(|m| match &m["content"] {
                    Value::String(s) => s.len(),
                    other => other.to_string().len(),
                })
                .sum()
        })
        .unwrap_or(0);
    estimate(chars)
}

fn usage_of(v: &Value) -> Option<(u64, u64)> {
    let u = v.get("usage")?;
    Some((
        u["prompt_tokens"].as_u64()?,
        u["completion_tokens"].as_u64().unwrap_or(0),
    ))
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
        .map(|cs| {
            cs.iter()
                .map(|c| c["message"]["content"].as_str().map_or(0, str::len))
                .sum()
        })
        .unwrap_or(0);
    Tokens {
        prompt: prompt_estimate(request),
        completion: estimate(text),
        reported: false,
    }
}

/// Watches a server-sent-events stream go by and counts its tokens.
#[derive(Debug, Default)]
pub struct StreamMeter {
    /// Bytes of an incomplete line carried to the next chunk.
    partial: Vec<u8>,
    content_chars: usize,
    usage: Option<(u64, u64)>,
}

impl StreamMeter {
    pub fn feed(&mut self, chunk: &[u8]) {
        self.partial.extend_from_slice(chunk);
        while let Some(pos) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=pos).collect();
            self.line(&line);
        }
        // A line longer than any sane event is not buffered without bound.
        if self.partial.len() > 1 << 20 {
            self.partial.clear();
        }
    }

    fn line(&mut self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let Some(data) = line.trim().strip_prefix("data:") else {
            return;
        };
        let data = data.trim();
        if data == "[DONE]" {
            return;
        }
        let Ok(event) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if let Some(u) = usage_of(&event) {
            self.usage = Some(u);
        }
        if let Some(choices) = event["choices"].as_array() {
            for c in choices {
                if let Some(s) = c["delta"]["content"].as_str() {
                    self.content_chars += s.len();
                }
            }
        }
    }

    /// The tokens counted so far (the whole call once the stream has ended).
    pub fn tokens(&mut self, request: &Value) -> Tokens {
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
                prompt: prompt_estimate(request),
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
        assert_eq!(m.tokens(&json!({})).completion, 2);
    }

    #[test]
    fn stream_usage_chunk_is_used() {
        let mut m = StreamMeter::default();
        m.feed(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":9}}\n");
        assert_eq!(
            m.tokens(&json!({})),
            Tokens {
                prompt: 7,
                completion: 9,
                reported: true
            }
        );
    }
}
