// cpp-httplib as Debian ships it: the implementation is compiled into libcpp-httplib.so with
// OpenSSL, zlib and Brotli support on, and those switches change the layout of its classes
// (Request has an `ssl` member with OpenSSL). Every user must see the same switches as the
// library, so include httplib.h only through this header. (pkg-config's cpp-httplib Cflags
// set the same three macros.)
#pragma once
#ifndef CPPHTTPLIB_OPENSSL_SUPPORT
#define CPPHTTPLIB_OPENSSL_SUPPORT
#endif
#ifndef CPPHTTPLIB_ZLIB_SUPPORT
#define CPPHTTPLIB_ZLIB_SUPPORT
#endif
#ifndef CPPHTTPLIB_BROTLI_SUPPORT
#define CPPHTTPLIB_BROTLI_SUPPORT
#endif
#include <httplib.h>
