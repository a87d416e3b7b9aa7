#include <gtest/gtest.h>

#include <fstream>

#include "hub/digest.h"
#include "support/test_support.h"

namespace lcmd::hub {
namespace {

TEST(Digest, Sha256MatchesTheStandardVector) {
  EXPECT_EQ(digest_hex("abc", DigestKind::sha256), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Digest, GitBlobSha1MatchesGitHashObject) {
  // `printf 'hello\n' | git hash-object --stdin`
  EXPECT_EQ(digest_hex("hello\n", DigestKind::git_blob_sha1), "ce013625030ba8dba906f756967f9e9ca394464a");
  // The empty blob, a constant every git user has seen.
  EXPECT_EQ(digest_hex("", DigestKind::git_blob_sha1), "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
}

TEST(Digest, FileDigestEqualsBytesDigest) {
  test::TempDir tmp;
  const std::string bytes(3 << 20, 'x');  // over the 1 MiB read chunk
  std::ofstream(tmp.path() / "f", std::ios::binary) << bytes;
  EXPECT_EQ(file_digest_hex(tmp.path() / "f", DigestKind::sha256), digest_hex(bytes, DigestKind::sha256));
  EXPECT_EQ(file_digest_hex(tmp.path() / "f", DigestKind::git_blob_sha1), digest_hex(bytes, DigestKind::git_blob_sha1));
  EXPECT_THROW(file_digest_hex(tmp.path() / "missing", DigestKind::sha256), std::system_error);
}

TEST(Digest, ParsesHubEtags) {
  const std::string sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  ExpectedDigest d = parse_hub_etag("\"" + sha256 + "\"");
  EXPECT_EQ(d.kind, DigestKind::sha256);
  EXPECT_EQ(d.hex, sha256);
  d = parse_hub_etag("W/\"CE013625030BA8DBA906F756967F9E9CA394464A\"");  // weak, upper case
  EXPECT_EQ(d.kind, DigestKind::git_blob_sha1);
  EXPECT_EQ(d.hex, "ce013625030ba8dba906f756967f9e9ca394464a");
  EXPECT_EQ(parse_hub_etag("\"5d41402abc4b2a76b9719d911017c592\"").kind, DigestKind::none);  // an md5 CDN ETag
  EXPECT_EQ(parse_hub_etag("\"" + sha256.substr(0, 63) + "g\"").kind, DigestKind::none);
  EXPECT_EQ(parse_hub_etag("").kind, DigestKind::none);
}

}  // namespace
}  // namespace lcmd::hub
