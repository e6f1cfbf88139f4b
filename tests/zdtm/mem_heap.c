/*
 * mem_heap: malloc()ed linked structures.
 *
 * Builds a binary search tree of 50000 malloc()ed nodes (variable-sized
 * payloads), a doubly linked list of 2000 nodes, and a few big blocks that
 * malloc serves with mmap().  The loop keeps inserting tree nodes.  After
 * go: the tree is ordered and complete with intact payloads, the list is
 * consistent both ways, the big blocks are intact, and everything can be
 * free()d and malloc()ed again (allocator metadata survived).
 */
#include "zdtm.h"

struct node {
	uint64_t key;
	struct node *l, *r;
	size_t len;
	unsigned char payload[];
};

struct item {
	struct item *prev, *next;
	uint64_t v;
};

static struct node *root;
static size_t nnodes;

static void insert(uint64_t key)
{
	struct node **p = &root, *n;
	size_t len = 8 + key % 200;

	while (*p) {
		if ((*p)->key == key)
			return;
		p = key < (*p)->key ? &(*p)->l : &(*p)->r;
	}
	n = malloc(sizeof(*n) + len);
	n->key = key;
	n->l = n->r = NULL;
	n->len = len;
	for (size_t i = 0; i < len; i++)
		n->payload[i] = (unsigned char)(key >> (i % 8 * 8)) ^ (unsigned char)i;
	*p = n;
	nnodes++;
}

/* in-order walk: checks order and payloads, frees; returns node count */
static size_t walk_free(struct node *n, uint64_t *last, int *bad)
{
	size_t c;

	if (!n)
		return 0;
	c = walk_free(n->l, last, bad);
	if (n->key <= *last && *last != 0)
		(*bad)++;
	*last = n->key;
	if (n->len != 8 + n->key % 200)
		(*bad)++;
	else
		for (size_t i = 0; i < n->len; i++)
			if (n->payload[i] != ((unsigned char)(n->key >> (i % 8 * 8)) ^ (unsigned char)i)) {
				(*bad)++;
				break;
			}
	c += 1 + walk_free(n->r, last, bad);
	free(n);
	return c;
}

int main(int argc, char **argv)
{
	struct item head = { &head, &head, 0 }, *it;
	size_t bigsz[3] = { 1 << 20, 3 << 20, 300 << 10 };
	unsigned char *big[3];
	uint64_t next = 0, last = 0;
	int bad = 0;
	size_t n;

	zdtm_init(argc, argv);
	for (next = 1; next <= 50000; next++)
		insert(zdtm_mix(next) | 1);
	for (uint64_t i = 0; i < 2000; i++) {
		it = malloc(sizeof(*it));
		it->v = i;
		it->prev = head.prev;
		it->next = &head;
		head.prev->next = it;
		head.prev = it;
	}
	for (int b = 0; b < 3; b++) {
		big[b] = malloc(bigsz[b]);
		for (size_t i = 0; i < bigsz[b]; i++)
			big[b][i] = (unsigned char)(i * 7 + b);
	}

	zdtm_ready();
	while (!zdtm_go()) {
		for (int k = 0; k < 50; k++, next++)
			insert(zdtm_mix(next) | 1);
		zdtm_sleep_ms(2);
	}

	n = 0;
	for (it = head.next; it != &head; it = it->next, n++)
		if (it->v != n || it->next->prev != it) {
			fail("list broken at item %zu", n);
			break;
		}
	CHECK(n == 2000, "list has %zu items", n);
	for (int b = 0; b < 3; b++)
		for (size_t i = 0; i < bigsz[b]; i++)
			if (big[b][i] != (unsigned char)(i * 7 + b)) {
				fail("big block %d byte %zu corrupted", b, i);
				break;
			}
	n = nnodes;
	CHECK(walk_free(root, &last, &bad) == n && bad == 0,
	      "tree broken: %d bad nodes (expected %zu nodes)", bad, n);
	for (it = head.next; it != &head;) {
		struct item *nx = it->next;
		free(it);
		it = nx;
	}
	for (int b = 0; b < 3; b++)
		free(big[b]);
	/* allocate again after freeing everything */
	root = NULL;
	nnodes = 0;
	for (uint64_t k = 1; k <= 20000; k++)
		insert(zdtm_mix(k ^ 0x99) | 1);
	last = 0;
	n = nnodes;
	CHECK(walk_free(root, &last, &bad) == n && bad == 0, "new tree broken");
	return zdtm_finish();
}
