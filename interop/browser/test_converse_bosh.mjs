// Converse.js (npm) in headless Chromium logs in over BOSH (XEP-0124/XEP-0206, cross-origin
// with CORS) and chats with an slixmpp account; see converse_chat.mjs. Screenshot:
// $INTEROP_ARTIFACTS/converse-bosh.png.
import { converseChat } from "./converse_chat.mjs";

await converseChat("bosh", "test_converse_bosh.mjs");
