/* chat.c: chat templates. A GGUF file carries its template as Jinja
 * source (tokenizer.chat_template); running Jinja is out of scope, so the
 * family is recognised from the source and rendered by hand, exactly as
 * the reference templates render it:
 * - ChatML (SmolLM2, Qwen, ...): the template contains "<|im_start|>";
 * - llama-2: the template contains "[INST]" (the Hugging Face Llama-2
 *   chat template).
 * Anything else is refused by name rather than rendered wrongly.
 */
#include "gw_engine.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEMPLATE_QUOTE_CHARS 60

/* Writes the first max_chars characters of s[0, n) into out as the inside
 * of a one-line quoted string: control bytes, quote and backslash escaped
 * (\n, \t, \", \\, \xHH); "..." appended when s is longer. */
static void quote_prefix(char *out, size_t cap, const char *s, size_t n, size_t max_chars)
{
    size_t m = 0, chars = 0, i = 0;
    out[0] = '\0';
    while (i < n && chars < max_chars) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        size_t el;
        size_t adv = 1;
        if (c == '\n' || c == '\t' || c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = c == '\n' ? 'n' : c == '\t' ? 't' : (char)c;
            el = 2;
        } else if (c < 0x20 || c == 0x7F) {
            el = (size_t)snprintf(esc, sizeof esc, "\\x%02x", c);
        } else {
            /* A whole UTF-8 character (continuation bytes follow it). */
            while (i + adv < n && ((unsigned char)s[i + adv] & 0xC0) == 0x80 && adv < 4)
                adv++;
            if (adv > sizeof esc)
                adv = sizeof esc;
            memcpy(esc, s + i, adv);
            el = adv;
        }
        if (m + el + 4 >= cap)
            break;
        memcpy(out + m, esc, el);
        m += el;
        i += adv;
        chars++;
    }
    if (i < n && m + 4 < cap) {
        memcpy(out + m, "...", 3);
        m += 3;
    }
    out[m] = '\0';
}

static const char *find(const char *s, size_t n, const char *needle)
{
    return memmem(s, n, needle, strlen(needle));
}

/* ChatML templates may write a default system message as a literal:
 * '<|im_start|>system\nYou are ...<|im_end|>\n' (SmolLM2). Returns it when
 * the text between the newline (real, or written as \n) and <|im_end|> is a
 * plain literal: no quote, brace, plus or backslash (so not an expression
 * like message['content']). */
static bool chatml_default_system(const char *s, size_t n, const char **out, size_t *len)
{
    static const char *const heads[] = {"<|im_start|>system\n", "<|im_start|>system\\n"};
    for (size_t h = 0; h < 2; h++) {
        const char *p = find(s, n, heads[h]);
        if (!p)
            continue;
        p += strlen(heads[h]);
        const char *end = find(p, (size_t)(s + n - p), "<|im_end|>");
        if (!end || end == p)
            continue;
        bool plain = true;
        for (const char *q = p; q < end && plain; q++)
            plain = !strchr("'\"{}+\\", *q);
        if (plain) {
            *out = p;
            *len = (size_t)(end - p);
            return true;
        }
    }
    return false;
}

int gw_chat_template_init(gw_chat_template *ct, const char *tmpl, size_t len,
                          const gw_tokenizer *tok, char *err, size_t errlen)
{
    if (!ct || (!tmpl && len))
        return -EINVAL;
    memset(ct, 0, sizeof *ct);
    if (!tmpl)
        tmpl = "";
    if (find(tmpl, len, "<|im_start|>")) {
        ct->kind = GW_CHAT_CHATML;
        const char *d;
        size_t dl;
        if (chatml_default_system(tmpl, len, &d, &dl)) {
            ct->default_system = malloc(dl + 1);
            if (!ct->default_system) {
                gw_errf(err, errlen, "chat: out of memory");
                return -ENOMEM;
            }
            memcpy(ct->default_system, d, dl);
            ct->default_system[dl] = '\0';
            ct->default_system_len = dl;
        }
        return 0;
    }
    if (find(tmpl, len, "[INST]")) {
        ct->kind = GW_CHAT_LLAMA2;
        snprintf(ct->bos, sizeof ct->bos, "<s>");
        snprintf(ct->eos, sizeof ct->eos, "</s>");
        const char *s;
        size_t sl;
        if (tok && gw_tokenizer_token_text(tok, gw_tokenizer_bos(tok), &s, &sl) == 0 &&
            sl < sizeof ct->bos)
            snprintf(ct->bos, sizeof ct->bos, "%.*s", (int)sl, s);
        if (tok && gw_tokenizer_token_text(tok, gw_tokenizer_eos(tok), &s, &sl) == 0 &&
            sl < sizeof ct->eos)
            snprintf(ct->eos, sizeof ct->eos, "%.*s", (int)sl, s);
        return 0;
    }
    char q[TEMPLATE_QUOTE_CHARS * 4 + 8];
    quote_prefix(q, sizeof q, tmpl, len, TEMPLATE_QUOTE_CHARS);
    gw_errf(err, errlen, "chat: unsupported chat template \"%s\" (supported: ChatML, llama-2)", q);
    return -EINVAL;
}

int gw_chat_template_from_gguf(gw_chat_template *ct, const gw_gguf *g, const gw_tokenizer *tok,
                               char *err, size_t errlen)
{
    if (!ct || !g)
        return -EINVAL;
    memset(ct, 0, sizeof *ct); /* gw_chat_template_free() is safe whatever happens */
    const char *s;
    size_t n;
    int rc = gw_gguf_get_str(g, "tokenizer.chat_template", &s, &n);
    if (rc == -ENOENT) {
        gw_errf(err, errlen, "%s: tokenizer.chat_template missing: the model has no chat template",
                gw_gguf_name(g));
        return -ENOENT;
    }
    if (rc) {
        gw_errf(err, errlen, "%s: tokenizer.chat_template is not a string", gw_gguf_name(g));
        return -EINVAL;
    }
    return gw_chat_template_init(ct, s, n, tok, err, errlen);
}

void gw_chat_template_free(gw_chat_template *ct)
{
    if (!ct)
        return;
    free(ct->default_system);
    ct->default_system = NULL;
    ct->default_system_len = 0;
}

/* ---------------------------------------------------------------------- */

struct buf {
    char *p;
    size_t n, cap;
    bool oom;
};

static void put(struct buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (n > SIZE_MAX / 2 - b->n - 1) {
        b->oom = true;
        return;
    }
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void puts_(struct buf *b, const char *s)
{
    put(b, s, strlen(s));
}

enum role { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT };

static int role_of(const gw_chat_msg *m)
{
    static const char *const names[] = {"system", "user", "assistant"};
    for (int i = 0; i < 3; i++)
        if (m->role_len == strlen(names[i]) && memcmp(m->role, names[i], m->role_len) == 0)
            return i;
    return -1;
}

/* Python's str.strip() on ASCII whitespace (the Llama-2 template strips
 * every message). */
static void strip(const char **s, size_t *n)
{
    while (*n && strchr(" \t\n\r\v\f", (*s)[0]))
        (*s)++, (*n)--;
    while (*n && strchr(" \t\n\r\v\f", (*s)[*n - 1]))
        (*n)--;
}

static int format_chatml(const gw_chat_template *ct, const gw_chat_msg *msgs, size_t n,
                         struct buf *b)
{
    if (role_of(&msgs[0]) != ROLE_SYSTEM && ct->default_system) {
        puts_(b, "<|im_start|>system\n");
        put(b, ct->default_system, ct->default_system_len);
        puts_(b, "<|im_end|>\n");
    }
    for (size_t i = 0; i < n; i++) {
        puts_(b, "<|im_start|>");
        put(b, msgs[i].role, msgs[i].role_len);
        puts_(b, "\n");
        put(b, msgs[i].content, msgs[i].content_len);
        puts_(b, "<|im_end|>\n");
    }
    puts_(b, "<|im_start|>assistant\n");
    return 0;
}

static int format_llama2(const gw_chat_template *ct, const gw_chat_msg *msgs, size_t n,
                         struct buf *b, char *err, size_t errlen)
{
    const gw_chat_msg *sys = NULL;
    size_t first = 0;
    if (role_of(&msgs[0]) == ROLE_SYSTEM) {
        sys = &msgs[0];
        first = 1;
    }
    if (first == n) {
        gw_errf(err, errlen, "chat: llama-2 template: the conversation has no user message");
        return -EINVAL;
    }
    for (size_t i = first; i < n; i++) {
        int want = (i - first) % 2 == 0 ? ROLE_USER : ROLE_ASSISTANT;
        if (role_of(&msgs[i]) != want) {
            gw_errf(
                err, errlen,
                "chat: llama-2 template: messages[%zu] has role \"%.*s\", expected \"%s\" (roles "
                "alternate user/assistant after an optional first system message)",
                i, (int)(msgs[i].role_len > 32 ? 32 : msgs[i].role_len), msgs[i].role,
                want == ROLE_USER ? "user" : "assistant");
            return -EINVAL;
        }
    }
    if (role_of(&msgs[n - 1]) != ROLE_USER) {
        gw_errf(err, errlen, "chat: llama-2 template: the last message must be the user's");
        return -EINVAL;
    }
    for (size_t i = first; i < n; i++) {
        const char *c = msgs[i].content;
        size_t cl = msgs[i].content_len;
        if (role_of(&msgs[i]) == ROLE_USER) {
            /* The first BOS is the tokenizer's (GW_TOK_ADD_BOS). */
            if (i > first)
                puts_(b, ct->bos);
            puts_(b, "[INST] ");
            struct buf joined = {0};
            if (i == first && sys) {
                /* content = '<<SYS>>\n' + system + '\n<</SYS>>\n\n' + content,
                 * then the whole of it stripped, as the template does. */
                puts_(&joined, "<<SYS>>\n");
                put(&joined, sys->content, sys->content_len);
                puts_(&joined, "\n<</SYS>>\n\n");
                put(&joined, c, cl);
                if (joined.oom) {
                    free(joined.p);
                    b->oom = true;
                    return 0;
                }
                c = joined.p;
                cl = joined.n;
            }
            strip(&c, &cl);
            put(b, c, cl);
            free(joined.p);
            puts_(b, " [/INST]");
        } else {
            strip(&c, &cl);
            puts_(b, " ");
            put(b, c, cl);
            puts_(b, " ");
            puts_(b, ct->eos);
        }
    }
    return 0;
}

int gw_chat_format(const gw_chat_template *ct, const gw_chat_msg *msgs, size_t n, char **out,
                   size_t *len, char *err, size_t errlen)
{
    if (!ct || !out || !len || (!msgs && n))
        return -EINVAL;
    *out = NULL;
    *len = 0;
    if (n == 0) {
        gw_errf(err, errlen, "chat: the conversation has no messages");
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if ((!msgs[i].role && msgs[i].role_len) || (!msgs[i].content && msgs[i].content_len))
            return -EINVAL;
        if (role_of(&msgs[i]) < 0) {
            gw_errf(err, errlen,
                    "chat: messages[%zu].role \"%.*s\" is not supported (system, user, assistant)",
                    i, (int)(msgs[i].role_len > 32 ? 32 : msgs[i].role_len),
                    msgs[i].role ? msgs[i].role : "");
            return -EINVAL;
        }
    }
    struct buf b = {0};
    int rc;
    switch (ct->kind) {
    case GW_CHAT_CHATML:
        rc = format_chatml(ct, msgs, n, &b);
        break;
    case GW_CHAT_LLAMA2:
        rc = format_llama2(ct, msgs, n, &b, err, errlen);
        break;
    default:
        gw_errf(err, errlen, "chat: template not initialised");
        rc = -EINVAL;
    }
    if (!rc && b.oom) {
        gw_errf(err, errlen, "chat: out of memory");
        rc = -ENOMEM;
    }
    if (rc) {
        free(b.p);
        return rc;
    }
    *out = b.p;
    *len = b.n;
    return 0;
}
