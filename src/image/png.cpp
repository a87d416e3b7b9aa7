#include "image/png.h"

#include <png.h>

#include <cstring>
#include <stdexcept>
#include <string>

namespace lcmd {

std::vector<uint8_t> encode_png(const uint8_t* rgb, int width, int height) {
  if (width <= 0 || height <= 0)
    throw std::invalid_argument("encode_png: image size must be positive, got " + std::to_string(width) + "x" +
                                std::to_string(height));
  if (rgb == nullptr) throw std::invalid_argument("encode_png: no pixel data");

  // libpng's simplified API reports errors through the image struct instead of longjmp, so no
  // setjmp crosses C++ frames here.
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(width);
  image.height = static_cast<png_uint_32>(height);
  image.format = PNG_FORMAT_RGB;

  // One pass into a buffer of the worst-case size, then trim.
  png_alloc_size_t size = PNG_IMAGE_PNG_SIZE_MAX(image);
  std::vector<uint8_t> png(size);
  const png_int_32 row_stride = static_cast<png_int_32>(width) * 3;
  if (!png_image_write_to_memory(&image, png.data(), &size, /*convert_to_8bit=*/0, rgb, row_stride,
                                 /*colormap=*/nullptr)) {
    const std::string message = image.message;
    png_image_free(&image);
    throw std::runtime_error("PNG encoding failed: " + message);
  }
  png.resize(size);
  return png;
}

}  // namespace lcmd
