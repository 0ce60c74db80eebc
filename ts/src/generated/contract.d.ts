// Generated from the Rust types in artifacts-contract by `UPDATE_TS=1 cargo test -p artifacts-contract`.
// Do not edit: change the Rust types and regenerate.

/**
 * The broad kind of a model, used for filtering and for routing to a worker.
 */
export type ModelType = "llm" | "image" | "audio" | "video";

/**
 * Where an entry's metadata and files came from.
 */
export type ModelSource = "huggingface" | "civitai" | "local";

/**
 * What a file is for, so workers find the weights and the tokenizer without guessing from names.
 */
export type FileRole = "weights" | "tokenizer" | "config" | "chat_template" | "vae" | "other";

/**
 * One file of an entry, relative to the entry's folder.
 */
export interface ModelFile {
    /**
     * Path relative to the entry's folder, with `/` separators; never absolute, never `..`.
     */
    path: string;
    /**
     * Size in bytes, when the source says.
     */
    size?: number;
    /**
     * Lower-case hex SHA-256 that the source publishes, used to verify downloads.
     */
    sha256?: string;
    /**
     * What the file is for.
     */
    role: FileRole;
    /**
     * Where to fetch it from when that is not derivable from the id (CivitAI download URLs).
     */
    url?: string;
}

/**
 * Where an entry's files stand on this machine; only `Available` may be loaded.
 */
export type ArtifactStatus = { state: "not_downloaded" } | { state: "downloading"; downloadedBytes: number; totalBytes?: number } | { state: "available" } | { state: "failed"; error: string };

/**
 * Architecture family after normalization, so `LlamaForCausalLM` and GGUF `llama` land in one bucket.
 */
export type ModelFamily = "llama" | "mistral" | "mixtral" | "phi" | "phi3" | "qwen2" | "qwen3" | "gemma" | "gemma2" | "gemma3" | "deepseek2" | "other";

/**
 * How the weights are stored on disk.
 */
export type WeightFormat = "safetensors" | "gguf" | "pickle" | "other";

/**
 * Whether the source makes people accept terms before downloading.
 */
export type Gated = "open" | "auto" | "manual";

/**
 * Special tokens and the chat template: what turns messages into token ids and back.
 */
export interface TokenizerInfo {
    /**
     * Beginning-of-sequence token text.
     */
    bos?: string;
    /**
     * End-of-sequence token texts (chat models often stop on several).
     */
    eos?: string[];
    /**
     * Padding token text.
     */
    pad?: string;
    /**
     * Unknown-word token text.
     */
    unk?: string;
    /**
     * Beginning-of-sequence token id, when the source gives ids.
     */
    bosId?: number;
    /**
     * End-of-sequence token ids (from generation_config or GGUF metadata).
     */
    eosIds?: number[];
    /**
     * Whether the tokenizer prepends BOS itself.
     */
    addBosToken?: boolean;
    /**
     * The Jinja chat template the model was trained with.
     */
    chatTemplate?: string;
}

/**
 * Sampling values the authors recommend (`generation_config.json`); every one optional.
 */
export interface SamplingDefaults {
    /**
     * `do_sample`: false means greedy decoding.
     */
    doSample?: boolean;
    /**
     * Softmax temperature.
     */
    temperature?: number;
    /**
     * Nucleus sampling mass.
     */
    topP?: number;
    /**
     * Keep only the k most likely tokens.
     */
    topK?: number;
    /**
     * Drop tokens below this fraction of the top probability.
     */
    minP?: number;
    /**
     * Multiplicative penalty on repeated tokens.
     */
    repetitionPenalty?: number;
    /**
     * Default generation length.
     */
    maxNewTokens?: number;
}

/**
 * Metadata of a text-generation model, from the Hub, `config.json` and friends, or GGUF headers.
 */
export interface LlmConfig {
    /**
     * Architecture as the source names it (`LlamaForCausalLM`, GGUF `llama`), else the family's name.
     * Always present (the catalog's store migrated older rows), so a UI never meets `undefined`.
     */
    architecture: string;
    /**
     * Normalized family; what workers dispatch on (`other` when unknown). Always present.
     */
    modelFamily: ModelFamily;
    /**
     * Weight file format.
     */
    format: WeightFormat;
    /**
     * Special tokens and chat template.
     */
    tokenizer?: TokenizerInfo;
    /**
     * Maximum tokens of prompt plus output.
     */
    contextLength?: number;
    /**
     * Quantization or dtype of the weights (`Q4_K_M`, `BF16`).
     */
    quantization?: string;
    /**
     * Number of parameters.
     */
    parameterCount?: number;
    /**
     * Transformer layers; with the head counts, sizes the KV cache for memory estimates.
     */
    numLayers?: number;
    /**
     * Hidden width.
     */
    hiddenSize?: number;
    /**
     * Attention heads.
     */
    numAttentionHeads?: number;
    /**
     * Key/value heads (grouped-query attention).
     */
    numKvHeads?: number;
    /**
     * Vocabulary size.
     */
    vocabSize?: number;
    /**
     * Recommended sampling values.
     */
    sampling?: SamplingDefaults;
    /**
     * Languages the model card lists.
     */
    languages?: string[];
    /**
     * The model this one was fine-tuned or quantized from.
     */
    baseModel?: string;
    /**
     * License id (`apache-2.0`, `llama3.2`).
     */
    license?: string;
    /**
     * Source tags.
     */
    tags?: string[];
    /**
     * Whether downloading needs accepted terms (and `HF_TOKEN`).
     */
    gated?: Gated;
    /**
     * Download count at the source.
     */
    downloads?: number;
    /**
     * Like count at the source.
     */
    likes?: number;
}

/**
 * The architecture generation a checkpoint belongs to; fine-tune lines (Pony, Illustrious) map to theirs.
 */
export type ImageBase = "sd1" | "sd2" | "sdxl" | "sd3" | "flux" | "other";

/**
 * Which job a checkpoint of a base was trained for.
 */
export type ImageVariant = "normal" | "inpaint" | "depth" | "refiner";

/**
 * A few-step distillation of a base: it changes the steps and guidance that work.
 */
export type Distillation = "turbo" | "lightning" | "hyper" | "lcm" | "schnell";

/**
 * What the UNet or transformer predicts; the scheduler must match it.
 */
export type PredictionType = "epsilon" | "v_prediction" | "flow";

/**
 * What kind of file it is: a full checkpoint or an add-on to one.
 */
export type CheckpointType = "checkpoint" | "lora" | "embedding" | "hypernetwork" | "vae" | "controlnet" | "other";

/**
 * Pixel size of an image.
 */
export interface Resolution {
    /**
     * Width in pixels.
     */
    width: number;
    /**
     * Height in pixels.
     */
    height: number;
}

/**
 * An example image from the source, so a UI can show what the model makes.
 */
export interface PreviewImage {
    /**
     * Image URL.
     */
    url: string;
    /**
     * Width in pixels, when known.
     */
    width?: number;
    /**
     * Height in pixels, when known.
     */
    height?: number;
    /**
     * Whether the image is not safe for work; UIs hide these unless asked.
     */
    nsfw?: boolean;
}

/**
 * Metadata of an image-generation model, from CivitAI, diffusers configs or safetensors headers.
 */
export interface ImageConfig {
    /**
     * Base model as the source names it (`SD 1.5`, `Pony`, `Flux.1 D`).
     */
    baseModel?: string;
    /**
     * Normalized base; what workers dispatch on (required: an image entry without one is malformed).
     */
    base: ImageBase;
    /**
     * Job the checkpoint was trained for.
     */
    variant?: ImageVariant;
    /**
     * Few-step distillation, if any.
     */
    distillation?: Distillation;
    /**
     * What the denoiser predicts; `None` means the base's usual one.
     */
    predictionType?: PredictionType;
    /**
     * Checkpoint, LoRA, embedding...
     */
    checkpointType?: CheckpointType;
    /**
     * The VAE the authors recommend (a name or catalog id).
     */
    vae?: string;
    /**
     * CLIP skip as the popular UIs count it (1 = last layer, 2 = penultimate).
     */
    clipSkip?: number;
    /**
     * Training resolution, when the source says or the weights imply.
     */
    resolution?: Resolution;
    /**
     * Words that activate a LoRA or embedding.
     */
    triggerWords?: string[];
    /**
     * Recommended samplers, as the source names them (`DPM++ 2M Karras`).
     */
    samplers?: string[];
    /**
     * Recommended step count.
     */
    steps?: number;
    /**
     * Recommended classifier-free guidance scale.
     */
    cfgScale?: number;
    /**
     * Whether the source marks the model not safe for work.
     */
    nsfw?: boolean;
    /**
     * License summary or id.
     */
    license?: string;
    /**
     * Source tags.
     */
    tags?: string[];
    /**
     * Example images.
     */
    previewImages?: PreviewImage[];
    /**
     * Download count at the source.
     */
    downloads?: number;
    /**
     * Like count at the source.
     */
    likes?: number;
}

/**
 * Metadata of an audio model (speech recognition, text to speech, music).
 */
export interface AudioConfig {
    /**
     * Architecture as the source names it (`WhisperForConditionalGeneration`).
     */
    architecture?: string;
    /**
     * What it does, as the Hub's pipeline tag says (`automatic-speech-recognition`, `text-to-speech`).
     */
    task?: string;
    /**
     * Sample rate of the audio it reads or writes, in Hz.
     */
    sampleRate?: number;
    /**
     * Languages it handles.
     */
    languages?: string[];
    /**
     * License id.
     */
    license?: string;
    /**
     * Source tags.
     */
    tags?: string[];
}

/**
 * Metadata of a video-generation model.
 */
export interface VideoConfig {
    /**
     * Base model as the source names it (`Wan Video`, `Hunyuan Video`, `SVD`).
     */
    baseModel?: string;
    /**
     * Architecture as the source names it.
     */
    architecture?: string;
    /**
     * Frame size it was trained at.
     */
    resolution?: Resolution;
    /**
     * Frames per clip.
     */
    frames?: number;
    /**
     * Frames per second.
     */
    fps?: number;
    /**
     * Whether the source marks it not safe for work.
     */
    nsfw?: boolean;
    /**
     * License id.
     */
    license?: string;
    /**
     * Source tags.
     */
    tags?: string[];
}

/**
 * A model type together with its config: the one place the two are paired.
 */
export type TypedConfig = { modelType: "llm"; config: LlmConfig } | { modelType: "image"; config: ImageConfig } | { modelType: "audio"; config: AudioConfig } | { modelType: "video"; config: VideoConfig };

/**
 * One model in the catalog: identity, storage and the typed, type-specific config.
 */
export type ModelEntry = { id: `hf:${string}` | `civitai:${string}` | `file:${string}`; name: string; author?: string; source: ModelSource; sourceUrl?: string; revision?: string; path?: string; size?: number; files?: ModelFile[]; status: ArtifactStatus; addedAt: string; updatedAt: string } & TypedConfig;

/**
 * The kinds of worker this project ships.
 */
export type WorkerKind = "llm" | "sd";

/**
 * Where a worker computes.
 */
export type DeviceKind = "cpu" | "cuda" | "metal";

/**
 * One LLM family a worker runs, from one weight format: a GGUF `gemma2` and a safetensors `gemma2`
 * are different code paths, and a worker may have one without the other.
 */
export interface LlmArchitecture {
    /**
     * The weight format.
     */
    format: WeightFormat;
    /**
     * The family, as the catalog normalizes it.
     */
    family: ModelFamily;
}

/**
 * What one worker build can run.
 */
export interface WorkerCapabilities {
    /**
     * Which worker.
     */
    kind: WorkerKind;
    /**
     * LLM architectures it has an implementation for, each in the weight format it reads it from.
     */
    llmArchitectures?: LlmArchitecture[];
    /**
     * Weight formats it reads.
     */
    formats?: WeightFormat[];
    /**
     * Quantizations and dtypes it runs (upper case); empty means any.
     */
    quantizations?: string[];
    /**
     * Image bases it has pipelines for.
     */
    bases?: ImageBase[];
    /**
     * Image variants it supports.
     */
    variants?: ImageVariant[];
    /**
     * Checkpoint types it loads as a model.
     */
    checkpointTypes?: CheckpointType[];
    /**
     * Devices this build can use.
     */
    devices?: DeviceKind[];
}

/**
 * The answer to "can this worker run this entry?", with reasons and a memory estimate.
 */
export interface Compatibility {
    /**
     * The worker asked about.
     */
    worker: WorkerKind;
    /**
     * True when `reasons` is empty.
     */
    compatible: boolean;
    /**
     * Why not, one sentence each.
     */
    reasons: string[];
    /**
     * Estimated bytes of memory needed to load the entry and run one request.
     */
    memoryBytes: number;
}
