//! The engine's errors as HTTP sees them: the client's mistakes are 400s naming the field (a context
//! overflow names the prompt tokens, the requested tokens and the context length), the rest are 500s.

use worker_runtime::WorkerError;

use crate::error::LlmError;

/// Maps an engine error; `prompt_field` is where the request's prompt came from (`messages`/`prompt`).
pub fn to_worker_error(err: LlmError, prompt_field: &str) -> WorkerError {
    let message = err.to_string();
    match err {
        LlmError::ContextOverflow { .. }
        | LlmError::KvCacheTooSmall { .. }
        | LlmError::EmptyPrompt
        | LlmError::Template(_) => WorkerError::invalid(prompt_field, message),
        LlmError::NoChatTemplate => WorkerError::invalid("messages", message),
        LlmError::InvalidRequest(_) => WorkerError::InvalidRequest { param: None, message },
        _ => WorkerError::Internal(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_overflow_is_a_400_with_the_numbers() {
        let err = LlmError::ContextOverflow {
            prompt_tokens: 100,
            requested_tokens: 50,
            context_length: 128,
        };
        match to_worker_error(err, "messages") {
            WorkerError::InvalidRequest { param, message } => {
                assert_eq!(param.as_deref(), Some("messages"));
                for number in ["100", "50", "128"] {
                    assert!(message.contains(number), "{message}");
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_broken_invariant_is_a_500_not_the_clients_fault() {
        let err = LlmError::Internal("position 9 is past the 3 cached positions".into());
        assert!(matches!(
            to_worker_error(err, "prompt"),
            WorkerError::Internal(message) if message.contains("position 9")
        ));
    }
}
