#include "pipeline/pack.h"

#include <optional>

#include "core/cpu.h"
#include "core/error.h"
#include "core/file_util.h"
#include "io/packed_model.h"
#include "models/lora.h"
#include "pipeline/model_parts.h"
#include "pipeline/txt2img.h"

namespace lcmd {

namespace fs = std::filesystem;

namespace {

// How each component's layers are stored: as the layers compute on them at `precision` (in
// place at load on a CPU that picks the same layout), or as values in `dtype` (fp16: no CPU
// kernel computes in it, so it stays plain and is converted at load).
struct ComponentPacking {
  Precision precision;
  DType dtype;
};
struct Packing {
  ComponentPacking text_encoder, unet, vae;
  bool store_layouts;
};

Packing packing_for(const std::string& dtype) {
  constexpr ComponentPacking bf16{Precision::BF16, DType::BF16}, fp32{Precision::FP32, DType::F32},
      fp16{Precision::FP32, DType::F16};
  if (dtype == "auto") return {bf16, bf16, bf16, true};  // the default precision's (precision.h)
  if (dtype == "fp32") return {fp32, fp32, fp32, true};
  if (dtype == "bf16") return {bf16, bf16, bf16, true};
  if (dtype == "fp16") return {fp16, fp16, fp16, false};
  throw InputError("--dtype must be auto, fp32, fp16 or bf16, got '" + dtype + "'");
}

// The parts of any model path; `packed` keeps a packed input mapped while its parts are used.
ModelParts model_parts(const fs::path& model, const fs::path& tokenizer_dir, const fs::path& config_dir,
                       std::optional<PackedModelFile>& packed) {
  switch (detect_model_layout(model)) {
    case ModelLayout::DiffusersFolder: return ModelParts::from_folder(ModelFolder::locate(model));
    case ModelLayout::SingleFile: return ModelParts::from_single_file(model, tokenizer_dir, config_dir);
    case ModelLayout::Packed: packed.emplace(PackedModelFile::open(model)); return ModelParts::from_packed(*packed);
  }
  throw std::logic_error("unknown model layout");
}

void add_tokenizer_files(const ClipTokenizer::Files& files, PackedModelWriter& writer) {
  writer.add_file("tokenizer/vocab.json", files.vocab_json);
  writer.add_file("tokenizer/merges.txt", files.merges_txt);
  if (files.tokenizer_config_json) writer.add_file("tokenizer/tokenizer_config.json", *files.tokenizer_config_json);
  if (files.special_tokens_map_json) writer.add_file("tokenizer/special_tokens_map.json", *files.special_tokens_map_json);
}

nlohmann::json lora_list(const std::vector<LoraSpec>& loras) {
  nlohmann::json list = nlohmann::json::array();
  for (const LoraSpec& l : loras) list.push_back({{"file", l.path.filename().string()}, {"scale", l.scale}});
  return list;
}

}  // namespace

PackSummary pack_model(const fs::path& model, const fs::path& out, const PackOptions& options) {
  const Packing packing = packing_for(options.dtype);
  if (fs::exists(out) && fs::equivalent(model, out)) throw InputError("--out " + out.string() + " is the model being packed");
  std::optional<PackedModelFile> packed_input;
  const ModelParts parts = model_parts(model, options.tokenizer_dir, options.config_dir, packed_input);
  const ClipTokenizer tokenizer = parts.tokenizer();  // checks the tokenizer before anything is written
  PackSummary summary;
  write_file_atomic(out, [&](std::ostream& os) {
    PackedModelWriter writer(os);
    add_tokenizer_files(parts.tokenizer_files, writer);
    // LoRAs merge first, so the packed weights are the merged ones.
    const std::shared_ptr<const LoraSet> loras = LoraSet::load(options.loras);
    const LoraMergingSource merged_text(*parts.text_weights, loras, LoraMergingSource::Component::TextEncoder);
    const LoraMergingSource merged_unet(*parts.unet_weights, loras, LoraMergingSource::Component::UNet);
    const PackingSource text(merged_text, writer, "text_encoder", packing.text_encoder.dtype, packing.store_layouts);
    const PackingSource unet(merged_unet, writer, "unet", packing.unet.dtype, packing.store_layouts);
    const PackingSource vae(*parts.vae_weights, writer, "vae", packing.vae.dtype, packing.store_layouts);
    // Building the models walks every parameter exactly as loading will, so the file holds
    // precisely the tensors the engine reads (and nothing the walk skips, e.g. EMA copies),
    // and each layer reports the layout it computes on.
    const PipelinePrecision precision{packing.text_encoder.precision, packing.unet.precision, packing.vae.precision};
    const Txt2ImgPipeline walked(tokenizer, parts.text, text, parts.unet, unet, parts.vae, vae, parts.scheduler,
                                 precision);
    loras->check_all_applied();
    for (const PackingSource* source : {&text, &unet, &vae}) source->flush();
    writer.finish({{"created_by", "lcmd " LCMD_VERSION_STRING},
                   {"source", parts.description},
                   {"dtype", options.dtype},
                   {"packed_on", cpu_info().model + " (" + cpu_info().features() + ")"},
                   {"pipeline_class", parts.pipeline_class},
                   {"loras", lora_list(options.loras)},
                   {"configs",
                    {{"text_encoder", parts.text_json},
                     {"unet", parts.unet_json},
                     {"vae", parts.vae_json},
                     {"scheduler", parts.scheduler_json}}}});
  });
  summary.tensors = PackedModelFile::open(out).tensors().size();
  summary.file_bytes = fs::file_size(out);
  return summary;
}

ClipTokenizer load_model_tokenizer(const fs::path& model, const fs::path& tokenizer_dir, const fs::path& config_dir) {
  if (tokenizer_dir.empty() && detect_model_layout(model) == ModelLayout::Packed) {
    const PackedModelFile file = PackedModelFile::open(model);
    return ModelParts::from_packed(file).tokenizer();
  }
  return ClipTokenizer::from_dir(locate_tokenizer(model, tokenizer_dir, config_dir));
}

}  // namespace lcmd
