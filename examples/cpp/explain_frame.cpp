// explain_frame: run an exported CF-CAM frame (an AOTInductor package written by
// RealtimeCFCAM.export("frame.pt2")) with libtorch alone and write its explanation maps.
//
//   explain_frame FRAME.pt2 INPUT OUTPUT_PREFIX
//
// INPUT is the frame's input, already preprocessed, in one of two formats (README.md):
//   *.ppm       a binary 8-bit RGB PPM (P6) of exactly the input's height and width, for a
//               frame of input shape [1, 3, H, W]; normalised here with ImageNet's mean and std
//   any other   raw little-endian float32 values of the input shape (cfcam.input_shape)
// Prints each image's explained class and its logit, and writes OUTPUT_PREFIX.f32 (all maps,
// [B, H, W] raw float32) and OUTPUT_PREFIX-<b>.pgm (image b's map, 8-bit, map * 255 rounded).
// Exits with status 2 on bad arguments and 1 on any other error.

#include <ATen/ATen.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

using Metadata = std::unordered_map<std::string, std::string>;

std::string required(const Metadata& metadata, const std::string& key) {
  auto it = metadata.find(key);
  if (it == metadata.end()) throw std::runtime_error("the package has no metadata key " + key);
  return it->second;
}

// The integers of a JSON list such as "[1, 3, 224, 224]".
std::vector<int64_t> parse_shape(std::string json) {
  for (char& c : json) c = std::isdigit(static_cast<unsigned char>(c)) ? c : ' ';
  std::istringstream in(json);
  std::vector<int64_t> shape;
  for (int64_t n; in >> n;) shape.push_back(n);
  return shape;
}

// The strings of a JSON list of plain names such as ["logits", "class_idx", "maps"].
std::vector<std::string> parse_names(const std::string& json) {
  std::vector<std::string> names;
  for (size_t open = json.find('"'); open != std::string::npos; open = json.find('"', open + 1)) {
    size_t close = json.find('"', open + 1);
    if (close == std::string::npos) throw std::runtime_error("malformed cfcam.outputs: " + json);
    names.push_back(json.substr(open + 1, close - open - 1));
    open = close;
  }
  return names;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << at::IntArrayRef(shape);
  return out.str();
}

// Raw little-endian float32 values, exactly as many as the shape holds.
at::Tensor read_raw(const std::string& path, const std::vector<int64_t>& shape) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  at::Tensor x = at::empty(shape, at::kFloat);
  if (bytes.size() != x.nbytes())
    throw std::runtime_error(path + " has " + std::to_string(bytes.size()) + " bytes; the input " +
                             shape_string(shape) + " takes " + std::to_string(x.nbytes()) +
                             " (float32)");
  std::memcpy(x.data_ptr(), bytes.data(), bytes.size());
  return x;
}

// The next number of a PPM header, after whitespace and # comments.
int64_t header_number(std::istream& in) {
  while ((in >> std::ws).peek() == '#') in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  int64_t n = -1;
  in >> n;
  return n;
}

// A binary PPM (P6, maxval 255) of the input's size as [1, 3, H, W], normalised as
// torchvision and cfcam-fast do: (pixel / 255 - mean) / std per channel, in float32.
at::Tensor read_ppm(const std::string& path, const std::vector<int64_t>& shape) {
  if (shape.size() != 4 || shape[0] != 1 || shape[1] != 3)
    throw std::runtime_error("a PPM input needs a frame of input shape [1, 3, H, W]; this one takes " +
                             shape_string(shape) + ": give raw float32 instead");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  char magic[2] = {};
  in.read(magic, 2);
  int64_t width = header_number(in), height = header_number(in), maxval = header_number(in);
  if (!in || magic[0] != 'P' || magic[1] != '6' || maxval != 255)
    throw std::runtime_error(path + " is not a binary 8-bit PPM (P6, maxval 255)");
  if (height != shape[2] || width != shape[3])
    throw std::runtime_error(path + " is " + std::to_string(width) + "x" + std::to_string(height) +
                             "; the frame takes " + std::to_string(shape[3]) + "x" +
                             std::to_string(shape[2]) + " (resize it first)");
  in.get();  // the single whitespace character before the pixels
  std::vector<unsigned char> pixels(static_cast<size_t>(3 * height * width));
  if (!in.read(reinterpret_cast<char*>(pixels.data()), static_cast<std::streamsize>(pixels.size())))
    throw std::runtime_error(path + " is truncated");
  const float mean[3] = {0.485f, 0.456f, 0.406f}, stdev[3] = {0.229f, 0.224f, 0.225f};
  at::Tensor x = at::empty(shape, at::kFloat);
  float* out = x.data_ptr<float>();
  const int64_t plane = height * width;
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t p = 0; p < plane; ++p)
      out[c * plane + p] = (static_cast<float>(pixels[3 * p + c]) / 255.0f - mean[c]) / stdev[c];
  return x;
}

void write_bytes(const std::string& path, const char* data, size_t size, const std::string& header = "") {
  std::ofstream out(path, std::ios::binary);
  out << header;
  out.write(data, static_cast<std::streamsize>(size));
  if (!out) throw std::runtime_error("cannot write " + path);
}

// prefix.f32: the maps [B, H, W] as raw float32; prefix-<b>.pgm: image b's map, 8-bit.
void write_maps(const at::Tensor& maps, const std::string& prefix) {
  write_bytes(prefix + ".f32", static_cast<const char*>(maps.data_ptr()), maps.nbytes());
  const int64_t height = maps.size(1), width = maps.size(2);
  for (int64_t b = 0; b < maps.size(0); ++b) {
    const float* map = maps[b].data_ptr<float>();
    std::string gray(static_cast<size_t>(height * width), '\0');
    for (size_t p = 0; p < gray.size(); ++p)  // a NaN map (non-finite activations) is black
      gray[p] = static_cast<char>(std::isnan(map[p]) ? 0 : std::lround(std::clamp(map[p], 0.0f, 1.0f) * 255));
    write_bytes(prefix + "-" + std::to_string(b) + ".pgm", gray.data(), gray.size(),
                "P5\n" + std::to_string(width) + " " + std::to_string(height) + "\n255\n");
  }
}

size_t output_index(const std::vector<std::string>& outputs, const std::string& name) {
  auto it = std::find(outputs.begin(), outputs.end(), name);
  if (it == outputs.end()) throw std::runtime_error("the frame has no output " + name + " (cfcam.outputs)");
  return static_cast<size_t>(it - outputs.begin());
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: explain_frame FRAME.pt2 INPUT OUTPUT_PREFIX\n"
                 "  INPUT: a binary PPM (P6, *.ppm) of the input's size, or raw float32 of its shape\n";
    return 2;
  }
  const std::string package = argv[1], input = argv[2], prefix = argv[3];
  try {
    if (!std::ifstream(package)) throw std::runtime_error("cannot read " + package);
    torch::inductor::AOTIModelPackageLoader loader(package);
    const Metadata metadata = loader.get_metadata();
    const std::vector<int64_t> shape = parse_shape(required(metadata, "cfcam.input_shape"));
    const std::vector<std::string> outputs = parse_names(required(metadata, "cfcam.outputs"));
    const std::string device = metadata.count("cfcam.device") ? metadata.at("cfcam.device") : "cpu";

    at::Tensor x = ends_with(input, ".ppm") ? read_ppm(input, shape) : read_raw(input, shape);
    c10::InferenceMode inference;
    const std::vector<at::Tensor> result = loader.run({x.to(at::Device(device))});
    const at::Tensor logits = result.at(output_index(outputs, "logits")).cpu();
    const at::Tensor classes = result.at(output_index(outputs, "class_idx")).cpu();
    const at::Tensor maps = result.at(output_index(outputs, "maps")).to(at::kCPU, at::kFloat).contiguous();

    for (int64_t b = 0; b < classes.size(0); ++b) {
      const int64_t k = classes[b].item<int64_t>();
      std::cout << "image " << b << ": class " << k << ", logit " << std::setprecision(9)
                << logits[b][k].item<float>() << (maps[b].isnan().any().item<bool>() ? " (map NaN)" : "")
                << "\n";
    }
    write_maps(maps, prefix);
  } catch (const c10::Error& e) {  // libtorch's errors, e.g. a file that is no package
    std::cerr << "explain_frame: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "explain_frame: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
