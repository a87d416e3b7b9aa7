// Calls lcmd serve's OpenAI-compatible endpoint with the official openai client, as an
// application would. Used by tests/serve/http_server_test.cpp.
//   node generate_image.mjs BASE_URL PROMPT SIZE RESPONSE_FORMAT [SEED]
// Prints the image's base64 on stdout (exit 0), or "status <code>: <message>" of the API
// error on stdout (exit 3).
import OpenAI from "openai";

const [baseURL, prompt, size, responseFormat, seed] = process.argv.slice(2);
const client = new OpenAI({ apiKey: "unused-by-lcmd", baseURL, maxRetries: 0, timeout: 60_000 });
const params = { model: "lcmd", prompt, n: 1, size, response_format: responseFormat };
if (seed !== undefined) params.seed = Number(seed);  // an lcmd extension, passed through as is

try {
  const result = await client.images.generate(params);
  process.stdout.write(result.data[0].b64_json);
} catch (error) {
  if (!(error instanceof OpenAI.APIError)) throw error;
  process.stdout.write(`status ${error.status}: ${error.error?.message ?? error.message}`);
  process.exitCode = 3;
}
