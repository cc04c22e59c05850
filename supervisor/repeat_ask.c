/* repeat_ask.c - how many repetitions a prompt asks for (gw_supervisor.h,
 * "Requested repetition"; docs/ARCHITECTURE.md, "The watchdog").
 *
 * "Write 'hello' 30 times" asks for a loop: the watchdog should let it run
 * its 30 cycles and no more. The front reads the count from the last user
 * message at admission and carries it in the slot's flags; the watchdog
 * allows that many cycles (plus slack, under the plan's cap) before the
 * repetition detectors may kill.
 *
 * The text is cut into words (ASCII letters and digits, and UTF-8 bytes so
 * that "für" or "arrêt" is one word); digit runs and number words ("thirty",
 * "one hundred and five", "a dozen", a few in Spanish, French, German and
 * Italian) become numbers. A number counts only beside a cue:
 *  - a times word ("times", "fois", "veces", "vezes", "volte", "mal",
 *    "keer", "razy"): the number before it ("30 times", "5 more times") or
 *    right after it, no punctuation between ("7 times 100": a table's last
 *    row), the larger; "twice", "thrice";
 *  - a copy word ("copies", "repetitions", ...) after it, one word between
 *    at most ("3 identical copies");
 *  - a range: "from 1 to 300", "1-300", "de 1 a 100", "von 1 bis 100":
 *    b - a + 1;
 *  - "N <noun>", or a well-known set ("all the US states": 50), in a
 *    message that also says "each" or "every" (or cada, chaque, jede,
 *    ogni) other than to quantify the set: a template repeated N times
 *    ("40 lines, each saying ...", "for 30 nights" beside "every night").
 *    "List every country" alone asks for different lines: nothing.
 * The answer is the largest such count; 0 when there is none, and 0 for any
 * message that also asks for endless output ("forever", "again and again",
 * "without stopping", "para siempre", ...): those get no allowance at all.
 * A negative or fractional number, "0 times", and a count past 65535
 * (saturated) are handled as such; the caller caps the count anyway.
 * Cost: one pass, O(length), at most GW_ASK_WORDS words read; a hash
 * filter of the keywords (keyword_maybe) spares ordinary words the lists. */
#include "gw_supervisor.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WORD_LEN 24 /* longer words are kept cut (they match nothing) */
#define NUM_SATURATE 1000000000ull

enum { W_WORD, W_NUM };

struct word {
    int kind;
    int neg;   /* a '-' right before the digits, not after another digit */
    int frac;  /* digits '.' digits */
    int dash;  /* the digits follow "N-" with no space: the end of a range */
    int gap;   /* punctuation between the word before and this one */
    int maybe; /* its hash is a keyword's (keyword_maybe): worth comparing */
    uint64_t value;
    char s[WORD_LEN + 1];
};

static int in(const char *w, const char *const *set)
{
    for (; *set; set++)
        if (strcmp(w, *set) == 0)
            return 1;
    return 0;
}

/* Whether a word's hash is one of the keywords' (a filter: most words of a
 * prompt are none, and skip every list below). */
static int keyword_maybe(const char *s);

static int in_w(const struct word *x, const char *const *set)
{
    return x->maybe && in(x->s, set);
}

/* ----------------------------------------------------------- number words */

struct numword {
    const char *s;
    unsigned value;
    int scale; /* 1: multiplies what precedes (hundred), 2: closes a group (thousand) */
};

static const struct numword numwords[] = {
    {"zero", 0, 0},
    {"one", 1, 0},
    {"two", 2, 0},
    {"three", 3, 0},
    {"four", 4, 0},
    {"five", 5, 0},
    {"six", 6, 0},
    {"seven", 7, 0},
    {"eight", 8, 0},
    {"nine", 9, 0},
    {"ten", 10, 0},
    {"eleven", 11, 0},
    {"twelve", 12, 0},
    {"thirteen", 13, 0},
    {"fourteen", 14, 0},
    {"fifteen", 15, 0},
    {"sixteen", 16, 0},
    {"seventeen", 17, 0},
    {"eighteen", 18, 0},
    {"nineteen", 19, 0},
    {"twenty", 20, 0},
    {"thirty", 30, 0},
    {"forty", 40, 0},
    {"fifty", 50, 0},
    {"sixty", 60, 0},
    {"seventy", 70, 0},
    {"eighty", 80, 0},
    {"ninety", 90, 0},
    {"dozen", 12, 1},
    {"hundred", 100, 1},
    {"thousand", 1000, 2},
    {"million", 1000000, 2},
    {"billion", 0, 3}, /* past the saturation point */
    /* es */
    {"dos", 2, 0},
    {"tres", 3, 0},
    {"cuatro", 4, 0},
    {"cinco", 5, 0},
    {"seis", 6, 0},
    {"siete", 7, 0},
    {"ocho", 8, 0},
    {"nueve", 9, 0},
    {"diez", 10, 0},
    {"veinte", 20, 0},
    {"treinta", 30, 0},
    {"cincuenta", 50, 0},
    {"cien", 100, 1},
    {"mil", 1000, 2},
    /* fr */
    {"deux", 2, 0},
    {"trois", 3, 0},
    {"quatre", 4, 0},
    {"cinq", 5, 0},
    {"sept", 7, 0},
    {"huit", 8, 0},
    {"neuf", 9, 0},
    {"dix", 10, 0},
    {"vingt", 20, 0},
    {"trente", 30, 0},
    {"cinquante", 50, 0},
    {"cent", 100, 1},
    {"mille", 1000, 2},
    /* de */
    {"zwei", 2, 0},
    {"drei", 3, 0},
    {"vier", 4, 0},
    {"sechs", 6, 0},
    {"sieben", 7, 0},
    {"acht", 8, 0},
    {"neun", 9, 0},
    {"zehn", 10, 0},
    {"zwanzig", 20, 0},
    {"hundert", 100, 1},
    {"tausend", 1000, 2},
    /* it */
    {"tre", 3, 0},
    {"cinque", 5, 0},
    {"sei", 6, 0},
    {"dieci", 10, 0},
    {"venti", 20, 0},
    {"cento", 100, 1},
};

static const struct numword *numword(const char *w)
{
    for (size_t i = 0; i < sizeof(numwords) / sizeof(numwords[0]); i++)
        if (strcmp(w, numwords[i].s) == 0)
            return &numwords[i];
    return NULL;
}

static const struct numword *numword_w(const struct word *x)
{
    return x->maybe ? numword(x->s) : NULL;
}

static uint64_t sat(uint64_t v)
{
    return v > NUM_SATURATE ? NUM_SATURATE : v;
}

/* Folds a run of number words ("one hundred and five", "a dozen",
 * "twenty-five") starting at w[i] into w[i]; returns the words it took. */
static size_t fold_number_words(struct word *w, size_t n, size_t i)
{
    uint64_t total = 0, group = 0;
    size_t j = i;
    int any = 0;
    if (strcmp(w[j].s, "a") == 0 || strcmp(w[j].s, "an") == 0) {
        const struct numword *nw = j + 1 < n ? numword_w(&w[j + 1]) : NULL;
        if (!nw || !nw->scale)
            return 0;
        group = 1; /* "a hundred", "a dozen" */
        j++;
    }
    for (; j < n; j++) {
        const struct numword *nw = numword_w(&w[j]);
        if (!nw) {
            /* "one hundred and five": "and" between number words */
            if (any && strcmp(w[j].s, "and") == 0 && j + 1 < n && numword_w(&w[j + 1]))
                continue;
            break;
        }
        any = 1;
        if (nw->scale == 3)
            total = NUM_SATURATE;
        else if (nw->scale == 2)
            total = sat(total + (group ? group : 1) * nw->value), group = 0;
        else if (nw->scale == 1)
            group = sat((group ? group : 1) * nw->value);
        else
            group = sat(group + nw->value);
    }
    if (!any)
        return 0;
    w[i].kind = W_NUM;
    w[i].value = sat(total + group);
    return j - i;
}

/* ---------------------------------------------------------------- words */

/* Cuts text into at most cap words; digit runs are numbers ("1,000" one
 * number), letters are lower-cased. */
static size_t cut_words(const char *t, size_t len, struct word *w, size_t cap)
{
    size_t n = 0, i = 0;
    int gap = 0;
    while (i < len && n < cap) {
        unsigned char c = (unsigned char)t[i];
        int digit = c >= '0' && c <= '9';
        int letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
        if (!digit && !letter) {
            gap |= c != ' ' && c != '\t' && c != '\n' && c != '\r';
            i++;
            continue;
        }
        struct word *x = &w[n];
        memset(x, 0, sizeof(*x));
        x->gap = gap;
        gap = 0;
        if (digit) {
            x->kind = W_NUM;
            if (i > 0 && t[i - 1] == '-') {
                int after_digit = i > 1 && t[i - 2] >= '0' && t[i - 2] <= '9';
                x->dash = after_digit;
                x->neg = !after_digit;
            }
            while (i < len) {
                if (t[i] >= '0' && t[i] <= '9') {
                    x->value = sat(x->value * 10 + (uint64_t)(t[i] - '0'));
                    i++;
                } else if (t[i] == ',' && i + 3 < len && t[i + 1] >= '0' && t[i + 1] <= '9' &&
                           t[i + 2] >= '0' && t[i + 2] <= '9' && t[i + 3] >= '0' &&
                           t[i + 3] <= '9' && (i + 4 >= len || t[i + 4] < '0' || t[i + 4] > '9')) {
                    i++; /* "1,000": a thousands separator */
                } else {
                    break;
                }
            }
            if (i + 1 < len && t[i] == '.' && t[i + 1] >= '0' && t[i + 1] <= '9') {
                x->frac = 1;
                for (i++; i < len && t[i] >= '0' && t[i] <= '9'; i++)
                    ;
            }
            snprintf(x->s, sizeof(x->s), "#");
        } else {
            size_t k = 0;
            for (; i < len; i++) {
                c = (unsigned char)t[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80))
                    break;
                if (k < WORD_LEN)
                    x->s[k++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
            }
            x->s[k] = 0;
            x->kind = W_WORD;
            x->maybe = keyword_maybe(x->s);
        }
        n++;
    }
    return n;
}

/* ----------------------------------------------------------------- cues */

static const char *const times_words[] = {"times", "fois", "veces", "vezes", "volte",
                                          "mal",   "keer", "razy",  NULL};
static const char *const copy_words[] = {"copies",         "copy",   "repetitions", "repeats",
                                         "iterations",     "copias", "kopien",      "copie",
                                         "wiederholungen", NULL};
static const char *const more_words[] = {"more", "extra", "additional", "other", "further", NULL};
static const char *const range_words[] = {"to", "through", "thru", "till", "until", "a",
                                          "à",  "bis",     "al",   "até",  NULL};
static const char *const each_words[] = {"each",  "every", "cada",  "chaque", "jede", "jeden",
                                         "jeder", "jedes", "jedem", "ogni",   "elke", NULL};
/* single words that ask for no end */
static const char *const endless_words[] = {
    "forever",  "infinitely",    "endlessly",   "indefinitely", "eternally", "endless",
    "infinite", "nonstop",       "ceaselessly", "siempre",      "toujours",  "immer",
    "sempre",   "infinitamente", "infiniment",  "unendlich",    "endlos",    "eternamente",
    NULL};
/* pairs: "without stopping", "again and again", "sin parar", "sans fin" */
static const char *const endless_first[] = {"without", "never", "non", "sin", "sans", "ohne", NULL};
static const char *const endless_second[] = {"stop",  "stopping", "end",      "ending", "ends",
                                             "limit", "finish",   "stop",     "parar",  "fin",
                                             "arrêt", "ende",     "aufhören", NULL};

static int endless(const struct word *w, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (in_w(&w[i], endless_words))
            return 1;
        if (i + 1 < n && in_w(&w[i], endless_first) && in_w(&w[i + 1], endless_second))
            return 1;
        /* "over and over", "again and again" */
        if (i + 2 < n && strcmp(w[i + 1].s, "and") == 0 && strcmp(w[i].s, w[i + 2].s) == 0 &&
            (strcmp(w[i].s, "over") == 0 || strcmp(w[i].s, "again") == 0))
            return 1;
    }
    return 0;
}

/* Well-known finite lists, by the noun that names them (singular and
 * plural); "days", "letters" and "elements" only with the word that makes
 * them finite within three words after them. */
struct known {
    const char *one, *many, *with;
    unsigned size;
};
static const struct known known_sets[] = {
    {"state", "states", NULL, 50},  {"country", "countries", NULL, 195},
    {"day", "days", "week", 7},     {"weekday", "weekdays", NULL, 7},
    {"month", "months", NULL, 12},  {"letter", "letters", "alphabet", 26},
    {"planet", "planets", NULL, 8}, {"continent", "continents", NULL, 7},
    {"ocean", "oceans", NULL, 5},   {"element", "elements", "periodic", 118},
};
static const char *const quantifier_words[] = {"all", "every", "each", NULL};

/* A quantifier at w[i] over a known set within three words ("all the US
 * states", "every month"): the set's size, else 0. */
static uint64_t known_set(const struct word *w, size_t n, size_t i)
{
    if (w[i].kind != W_WORD || !in_w(&w[i], quantifier_words))
        return 0;
    for (size_t j = i + 1; j < n && j <= i + 3; j++)
        for (size_t k = 0; k < sizeof(known_sets) / sizeof(known_sets[0]); k++) {
            const struct known *ks = &known_sets[k];
            if (strcmp(w[j].s, ks->one) != 0 && strcmp(w[j].s, ks->many) != 0)
                continue;
            if (!ks->with)
                return ks->size;
            for (size_t m = j + 1; m < n && m <= j + 3; m++)
                if (strcmp(w[m].s, ks->with) == 0)
                    return ks->size;
        }
    return 0;
}

static int count_ok(const struct word *x)
{
    return x->kind == W_NUM && !x->neg && !x->frac;
}

/* The count a cue at w[i] gives, 0 when none; *used marks numbers a cue
 * took (they are no "N <noun>"). */
static uint64_t cue(const struct word *w, size_t n, size_t i, uint8_t *used)
{
    const struct word *x = &w[i];
    if (x->kind == W_WORD && strcmp(x->s, "twice") == 0)
        return 2;
    if (x->kind == W_WORD && strcmp(x->s, "thrice") == 0)
        return 3;
    if (x->kind == W_WORD && in_w(x, times_words)) {
        /* "30 times", "5 more times"; "7 times 100" (a table up to 7 x 100,
         * no punctuation between): the larger */
        uint64_t c = 0;
        if (i + 1 < n && w[i + 1].kind == W_NUM && !w[i + 1].gap) {
            used[i + 1] = 1;
            c = count_ok(&w[i + 1]) ? w[i + 1].value : 0;
        }
        size_t k = i > 0 && in_w(&w[i - 1], more_words) ? i - 1 : i;
        if (k > 0 && w[k - 1].kind == W_NUM) {
            used[k - 1] = 1;
            if (count_ok(&w[k - 1]) && w[k - 1].value > c)
                c = w[k - 1].value;
            else if (!count_ok(&w[k - 1]))
                c = 0; /* "-5 times 3": no count */
        }
        return c;
    }
    if (x->kind == W_WORD && in_w(x, copy_words)) {
        for (size_t k = i; k > 0 && k + 2 >= i; k--)
            if (w[k - 1].kind == W_NUM) {
                used[k - 1] = 1;
                return count_ok(&w[k - 1]) ? w[k - 1].value : 0;
            }
        return 0;
    }
    /* a range: a "to" b, or a-b */
    if (count_ok(x) && i + 1 < n && count_ok(&w[i + 1]) && w[i + 1].dash &&
        w[i + 1].value > x->value) {
        used[i] = used[i + 1] = 1;
        return w[i + 1].value - x->value + 1;
    }
    if (count_ok(x) && i + 2 < n && in_w(&w[i + 1], range_words) && count_ok(&w[i + 2]) &&
        w[i + 2].value > x->value) {
        used[i] = used[i + 2] = 1;
        return w[i + 2].value - x->value + 1;
    }
    return 0;
}

static uint64_t asked(struct word *w, size_t n, uint8_t *used);

uint32_t gw_asked_count(const char *text, size_t len)
{
    if (!text)
        return 0;
    /* a word can be one byte ("a1b2": letters and digits alternate) */
    size_t cap = len + 1 < GW_ASK_WORDS ? len + 1 : GW_ASK_WORDS;
    struct word *w = malloc(cap * sizeof(*w));
    uint8_t *used = malloc(cap);
    uint64_t best = 0;
    if (!w || !used)
        goto out; /* no allowance: the detectors judge as for any prompt */
    size_t n = cut_words(text, len, w, cap);
    if (!endless(w, n))
        best = asked(w, n, used);
out:
    free(w);
    free(used);
    return best > GW_ASKED_MAX ? GW_ASKED_MAX : (uint32_t)best;
}

/* The count of words w[0, n) (no endless word among them). */
static uint64_t asked(struct word *w, size_t n, uint8_t *used)
{
    /* number words become one number each (the words they took: "") */
    for (size_t i = 0; i < n; i++) {
        size_t took = fold_number_words(w, n, i);
        for (size_t k = 1; k < took; k++)
            w[i + k].s[0] = 0, w[i + k].kind = W_WORD;
        if (took)
            snprintf(w[i].s, sizeof(w[i].s), "#");
        i += took ? took - 1 : 0;
    }
    /* the folded words are gone: close the gaps */
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (w[i].kind == W_NUM || w[i].s[0])
            w[m++] = w[i];
    n = m;
    memset(used, 0, n);
    uint64_t best = 0, items = 0;
    int each = 0, quantifiers = 0;
    for (size_t i = 0; i < n; i++) {
        if (w[i].kind == W_WORD && in_w(&w[i], each_words))
            each++;
        uint64_t c = cue(w, n, i, used);
        best = c > best ? c : best;
        /* "all the US states": a known set's size */
        uint64_t k = known_set(w, n, i);
        if (k) {
            items = k > items ? k : items;
            quantifiers += in_w(&w[i], each_words);
        }
    }
    /* a template repeated over items: "N <noun>" or a known set, and an
     * "each"/"every" that does not just quantify the set ("every country"
     * alone asks for different lines) */
    if (each > quantifiers) {
        best = items > best ? items : best;
        for (size_t i = 0; i + 1 < n; i++)
            if (count_ok(&w[i]) && !used[i] && w[i + 1].kind == W_WORD &&
                !in_w(&w[i + 1], more_words))
                best = w[i].value > best ? w[i].value : best;
    }
    return best;
}

uint32_t gw_asked_count_prompt(const char *prompt, size_t len, int chat)
{
    if (!prompt)
        return 0;
    if (!chat)
        return gw_asked_count(prompt, len);
    /* role NUL content NUL ...: the last "user" message */
    const char *last = NULL;
    size_t last_len = 0;
    size_t i = 0;
    while (i < len) {
        const char *role = prompt + i;
        const char *e = memchr(role, 0, len - i);
        if (!e)
            break;
        size_t rl = (size_t)(e - role);
        i += rl + 1;
        if (i > len)
            break;
        const char *content = prompt + i;
        const char *ce = memchr(content, 0, len - i);
        size_t cl = ce ? (size_t)(ce - content) : len - i;
        i += cl + 1;
        if (rl == 4 && memcmp(role, "user", 4) == 0)
            last = content, last_len = cl;
    }
    return last ? gw_asked_count(last, last_len) : 0;
}

uint32_t gw_wd_asked_cycles(uint32_t asked, uint32_t cap)
{
    uint32_t n = asked < cap ? asked : cap;
    return n ? n + n / 8 + 2 : 0;
}

/* ------------------------------------------------------------ the filter */

#define FILTER_BITS 65536u
static uint64_t filter[FILTER_BITS / 64];
static pthread_once_t filter_once = PTHREAD_ONCE_INIT;

static uint32_t word_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h % FILTER_BITS;
}

static void filter_add(const char *s)
{
    uint32_t h = word_hash(s);
    filter[h / 64] |= UINT64_C(1) << (h % 64);
}

static void filter_add_set(const char *const *set)
{
    for (; *set; set++)
        filter_add(*set);
}

static void filter_build(void)
{
    static const char *const others[] = {"and",   "a",     "an",     "over",
                                         "again", "twice", "thrice", NULL};
    const char *const *sets[] = {times_words,      copy_words,    more_words,    range_words,
                                 each_words,       endless_words, endless_first, endless_second,
                                 quantifier_words, others};
    for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++)
        filter_add_set(sets[i]);
    for (size_t i = 0; i < sizeof(numwords) / sizeof(numwords[0]); i++)
        filter_add(numwords[i].s);
    for (size_t i = 0; i < sizeof(known_sets) / sizeof(known_sets[0]); i++) {
        filter_add(known_sets[i].one);
        filter_add(known_sets[i].many);
        if (known_sets[i].with)
            filter_add(known_sets[i].with);
    }
}

static int keyword_maybe(const char *s)
{
    pthread_once(&filter_once, filter_build);
    uint32_t h = word_hash(s);
    return (filter[h / 64] >> (h % 64)) & 1;
}
