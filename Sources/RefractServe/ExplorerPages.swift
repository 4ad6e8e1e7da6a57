// The explorer's pages: one HTML document, its script and its style sheet, served by `refract serve`
// from memory (no CDN, no external fonts or scripts: they work offline).
enum ExplorerPages {
    /// The single page (`/`): it loads `/app.css` and `/app.js`; routes are in the URL's hash.
    static let html: String = #"""
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <meta name="color-scheme" content="light dark">
    <title>Refract explorer</title>
    <link rel="icon" href="data:,">
    <link rel="stylesheet" href="/app.css">
    <script src="/app.js" defer></script>
    </head>
    <body>
    <header class="topbar">
      <nav class="nav" aria-label="Primary">
        <a class="brand" href="#/">Refract explorer</a>
        <a class="nav-link" href="#/" data-nav="overview">Overview</a>
        <a class="nav-link" href="#/components" data-nav="components">Components</a>
        <span class="nav-model" id="run-model"></span>
      </nav>
      <div class="error-bar" id="error-bar" hidden>
        <p id="error" role="alert"></p>
        <button type="button" class="error-dismiss" id="error-dismiss">Dismiss</button>
      </div>
    </header>
    <main id="main" tabindex="-1">
      <p class="status">Loading…</p>
      <noscript><p>The Refract explorer needs JavaScript.</p></noscript>
    </main>
    </body>
    </html>
    """#

    /// `/app.js`: the whole application, plain ES2020, no dependencies.
    static let javascript: String = #"""
    // Refract explorer: the browser side of `refract serve`.
    // Plain ES2020, no dependencies, hash routing (#/, #/components, #/component/{i}, #/image/{row}).
    // Every string that comes from the API is inserted with textContent or other DOM APIs, never
    // innerHTML: descriptions and file names are user data.
    'use strict';

    (() => {
      const APP_NAME = 'Refract explorer';
      const RANK_DEBOUNCE_MS = 150;
      const CONTRIB_DEBOUNCE_MS = 150;
      const NEIGHBOR_DEBOUNCE_MS = 300;
      const STRIP_SIZE = 6;
      const TOP_SHARES = 30;
      const CONTRIB_BARS = 20;
      const DEFAULT_SELECTION = 3;
      const RANK_TOPS = [10, 20, 50];

      const main = document.getElementById('main');
      const errorBar = document.getElementById('error-bar');
      const errorBox = document.getElementById('error');
      const runModel = document.getElementById('run-model');

      // ---------------------------------------------------------------- DOM helpers

      const SVG_NS = 'http://www.w3.org/2000/svg';
      const PROPERTIES = new Set(['value', 'checked', 'disabled', 'hidden', 'selected']);

      function setAttributes(node, attributes) {
        for (const [key, value] of Object.entries(attributes || {})) {
          if (value === null || value === undefined || value === false) continue;
          if (key === 'text') node.textContent = String(value);
          else if (key === 'dataset') {
            for (const [name, v] of Object.entries(value)) node.dataset[name] = String(v);
          } else if (key === 'style') Object.assign(node.style, value);
          else if (key.startsWith('on') && typeof value === 'function') {
            node.addEventListener(key.slice(2), value);
          } else if (PROPERTIES.has(key)) node[key] = value;
          else node.setAttribute(key, value === true ? '' : String(value));
        }
        return node;
      }

      function appendChildren(node, children) {
        for (const child of children.flat(Infinity)) {
          if (child === null || child === undefined || child === false) continue;
          node.append(child instanceof Node ? child : String(child)); // strings become text nodes
        }
        return node;
      }

      /** An HTML element: h('a', {href: '#/'}, 'text', child, ...). */
      function h(tag, attributes, ...children) {
        return appendChildren(setAttributes(document.createElement(tag), attributes), children);
      }

      /** An SVG element. */
      function svg(tag, attributes, ...children) {
        return appendChildren(setAttributes(document.createElementNS(SVG_NS, tag), attributes), children);
      }

      // ---------------------------------------------------------------- formatting

      const isNum = (x) => typeof x === 'number' && Number.isFinite(x);
      const maxOf = (items, f) => items.reduce((m, x) => {
        const v = f(x);
        return isNum(v) && v > m ? v : m;
      }, 0);
      const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });

      function fmtNum(x) {
        if (!isNum(x)) return '—';
        if (x === 0) return '0';
        const a = Math.abs(x);
        if (a < 1e-3 || a >= 1e5) return x.toExponential(2);
        return String(Number(x.toPrecision(3)));
      }

      const fmtSigned = (x) => (isNum(x) && x > 0 ? '+' + fmtNum(x) : fmtNum(x));

      function fmtPct(x) {
        if (!isNum(x)) return '—';
        const p = x * 100;
        const a = Math.abs(p);
        if (a === 0) return '0%';
        if (a < 0.01) return (p < 0 ? '>−0.01' : '<0.01') + '%';
        return p.toFixed(a < 10 ? 2 : 1) + '%';
      }

      const yesNo = (flag) => (flag ? 'yes' : 'no');
      const quoted = (text) => `“${text}”`;

      /** A horizontal bar (decorative: the value is always written next to it). */
      function bar(value, max, className) {
        const fraction = isNum(value) && max > 0 ? Math.min(Math.max(value / max, 0), 1) : 0;
        return h('span', { class: 'track' + (className ? ' ' + className : ''), 'aria-hidden': 'true' },
          h('span', { class: 'fill', style: { width: (fraction * 100).toFixed(2) + '%' } }));
      }

      // ---------------------------------------------------------------- API

      class ApiError extends Error {
        constructor(message, status) {
          super(message);
          this.name = 'ApiError';
          this.status = status;
        }
      }

      const isAbort = (error) => Boolean(error) && error.name === 'AbortError';
      const abortError = () => new DOMException('Superseded', 'AbortError');

      /** A URL with a query; array values are joined with commas. Spaces are encoded as %20. */
      function withQuery(path, params) {
        const parts = [];
        for (const [key, value] of Object.entries(params || {})) {
          if (value === null || value === undefined || value === '') continue;
          const encoded = Array.isArray(value)
            ? value.map((v) => encodeURIComponent(String(v))).join(',')
            : encodeURIComponent(String(value));
          if (encoded === '') continue;
          parts.push(encodeURIComponent(key) + '=' + encoded);
        }
        return parts.length ? path + '?' + parts.join('&') : path;
      }

      /** GET a JSON document; a 4xx/5xx answer's {"error": ...} becomes an ApiError. */
      async function getJSON(path, signal) {
        let response;
        try {
          response = await fetch(path, { signal, headers: { Accept: 'application/json' } });
        } catch (error) {
          if (isAbort(error)) throw error;
          throw new ApiError(`Could not reach the server (${error.message}).`, 0);
        }
        const text = await response.text();
        let body = null;
        try {
          body = text ? JSON.parse(text) : null;
        } catch (_) {
          body = null;
        }
        if (!response.ok) {
          const message = body && typeof body.error === 'string' && body.error
            ? body.error
            : `${response.status} ${response.statusText}`.trim() + ` (${path})`;
          throw new ApiError(message, response.status);
        }
        if (body === null || typeof body !== 'object') {
          throw new ApiError(`The server sent an unreadable answer for ${path}.`, response.status);
        }
        return body;
      }

      const cache = { run: null, components: null, images: new Map() };

      function cached(key, load) {
        if (!cache[key]) cache[key] = load().catch((error) => { cache[key] = null; throw error; });
        return cache[key];
      }

      const loadRun = () => cached('run', () => getJSON('/api/run'));
      const loadComponents = () => cached('components', () => getJSON('/api/components')
        .then((body) => (Array.isArray(body.components) ? body.components : [])));

      function loadImageInfo(row) {
        if (!cache.images.has(row)) {
          cache.images.set(row, getJSON(`/api/images/${row}`).catch((error) => {
            cache.images.delete(row);
            throw error;
          }));
        }
        return cache.images.get(row);
      }

      const imageUrl = (row) => `/api/images/${row}/image`;

      // ---------------------------------------------------------------- errors

      let errorSource = null;

      /** Shows an error in the alert box; `source` lets a later success of the same control clear it. */
      function showError(error, source) {
        if (isAbort(error)) return;
        const message = error instanceof ApiError
          ? error.message
          : `Unexpected error: ${error && error.message ? error.message : String(error)}`;
        errorSource = source || null;
        errorBar.hidden = false;
        errorBox.textContent = message;
      }

      function clearError(source) {
        if (source !== undefined && source !== errorSource) return;
        errorSource = null;
        errorBar.hidden = true;
        errorBox.textContent = '';
      }

      document.getElementById('error-dismiss').addEventListener('click', () => clearError());

      // ---------------------------------------------------------------- views and requests

      let currentView = null;

      /** A page's lifetime: navigating away aborts its requests and timers. */
      function startView() {
        if (currentView) currentView.controller.abort();
        const controller = new AbortController();
        const view = {
          controller,
          signal: controller.signal,
          timers: new Set(),
          get alive() { return !controller.signal.aborted; },
        };
        controller.signal.addEventListener('abort', () => {
          for (const timer of view.timers) clearTimeout(timer);
          view.timers.clear();
        });
        currentView = view;
        return view;
      }

      function debounce(view, ms, fn) {
        let timer = 0;
        const run = (...args) => {
          clearTimeout(timer);
          view.timers.delete(timer);
          timer = setTimeout(() => {
            view.timers.delete(timer);
            if (view.alive) fn(...args);
          }, ms);
          view.timers.add(timer);
        };
        run.cancel = () => {
          clearTimeout(timer);
          view.timers.delete(timer);
        };
        return run;
      }

      /** Latest-only requests: each call aborts the previous one, and a superseded answer is dropped. */
      function latestRequest(view) {
        let controller = null;
        let sequence = 0;
        view.signal.addEventListener('abort', () => { if (controller) controller.abort(); });
        return {
          async get(path) {
            if (controller) controller.abort();
            controller = new AbortController();
            const id = ++sequence;
            const body = await getJSON(path, controller.signal);
            if (id !== sequence || !view.alive) throw abortError();
            return body;
          },
          cancel() {
            if (controller) controller.abort();
            sequence += 1;
          },
        };
      }

      // ---------------------------------------------------------------- routing

      function parseHash() {
        let raw = location.hash.replace(/^#/, '');
        if (!raw.startsWith('/')) raw = '/' + raw;
        const q = raw.indexOf('?');
        const path = q < 0 ? raw : raw.slice(0, q);
        const params = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1));
        const parts = path.split('/').filter(Boolean).map((part) => {
          try { return decodeURIComponent(part); } catch (_) { return part; }
        });
        return { parts, params };
      }

      /** Records a page's state in the hash query without navigating (the URL stays shareable). */
      function replaceQuery(view, path, params) {
        if (!view.alive) return;
        const target = '#' + withQuery(path, params);
        if (location.hash !== target) history.replaceState(history.state, '', target);
      }

      const isIndex = (text) => /^\d+$/.test(text) && Number.isSafeInteger(Number(text));

      function setTitle(text) {
        document.title = text ? `${text} · ${APP_NAME}` : APP_NAME;
      }

      function updateNav(section) {
        for (const link of document.querySelectorAll('[data-nav]')) {
          if (link.dataset.nav === section) link.setAttribute('aria-current', 'page');
          else link.removeAttribute('aria-current');
        }
      }

      async function route(initial) {
        const { parts, params } = parseHash();
        const view = startView();
        clearError();
        const root = h('div', { class: 'page' });
        main.replaceChildren(root);

        let page;
        let section = '';
        if (parts.length === 0) {
          section = 'overview';
          page = () => overviewPage(view, root);
        } else if (parts[0] === 'components' && parts.length === 1) {
          section = 'components';
          page = () => componentsPage(view, root, params);
        } else if (parts[0] === 'component' && parts.length === 2 && isIndex(parts[1])) {
          section = 'components';
          page = () => componentPage(view, root, Number(parts[1]), params);
        } else if (parts[0] === 'image' && parts.length === 2 && isIndex(parts[1])) {
          page = () => imagePage(view, root, Number(parts[1]), params);
        } else {
          page = () => notFoundPage(root);
        }
        updateNav(section);

        const done = page(); // renders the page's heading synchronously, then loads its data
        if (!initial) {
          window.scrollTo(0, 0);
          const heading = root.querySelector('h1');
          if (heading) heading.focus({ preventScroll: true });
        }
        try {
          await done;
        } catch (error) {
          if (view.alive) {
            showError(error);
            for (const note of root.querySelectorAll('.loading')) note.remove();
          }
        }
      }

      // ---------------------------------------------------------------- shared pieces

      const loadingNote = (text) => h('p', { class: 'status loading' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), text || 'Loading…');

      function heading(text) {
        setTitle(text);
        return h('h1', { tabindex: '-1' }, text);
      }

      function section(id, title, ...children) {
        return h('section', { class: 'card', 'aria-labelledby': id }, h('h2', { id }, title), ...children);
      }

      /** A thumbnail linking to the image's page; its alt text becomes the image's name once known. */
      function thumb(row, caption, extraClass) {
        const img = h('img', {
          src: imageUrl(row), alt: `Image ${row}`, loading: 'lazy', decoding: 'async', width: '96', height: '96',
        });
        const label = h('span', { class: 'thumb-label' }, `#${row}`);
        const link = h('a', {
          class: 'thumb' + (extraClass ? ' ' + extraClass : ''),
          href: `#/image/${row}`,
          dataset: { testid: 'thumb', row },
        }, img, h('span', { class: 'thumb-caption' }, label, caption ? h('span', { class: 'thumb-value' }, caption) : null));
        loadImageInfo(row).then((info) => {
          const name = typeof info.name === 'string' && info.name ? info.name : `Image ${row}`;
          const text = info.label ? `${name} (${info.label})` : name;
          img.alt = text;
          link.title = `Row ${row}: ${text}`;
        }).catch(() => { /* the thumbnail keeps its generic alt text */ });
        return link;
      }

      function facts(entries) {
        return h('dl', { class: 'facts' }, entries.filter(Boolean).map(([term, value]) =>
          h('div', { class: 'fact' }, h('dt', {}, term), h('dd', {}, value))));
      }

      function pager(previous, next) {
        return h('nav', { class: 'pager', 'aria-label': 'Neighbouring pages' },
          previous ? h('a', { href: previous.href, rel: 'prev' }, '← ', previous.label) : h('span'),
          next ? h('a', { href: next.href, rel: 'next' }, next.label, ' →') : h('span'));
      }

      // ---------------------------------------------------------------- #/ overview

      function niceCeiling(x) {
        if (!(x > 0)) return 1;
        const power = Math.pow(10, Math.floor(Math.log10(x)));
        for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= x * (1 - 1e-9)) return step * power;
        return 10 * power;
      }

      function blockChart(blocks, captionId) {
        const width = 720;
        const height = 240;
        const left = 56;
        const right = 8;
        const top = 12;
        const bottom = 40;
        const plotWidth = width - left - right;
        const plotHeight = height - top - bottom;
        const n = Math.max(blocks.length, 1);
        const ceiling = niceCeiling(maxOf(blocks, (b) => b.share));
        const y = (share) => top + plotHeight - (Math.max(share, 0) / ceiling) * plotHeight;
        const slot = plotWidth / n;
        const labelEvery = Math.ceil(n / 32);

        const chart = svg('svg', {
          class: 'chart', viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-labelledby': captionId,
          preserveAspectRatio: 'xMidYMid meet',
        });
        for (const fraction of [0, 0.25, 0.5, 0.75, 1]) {
          const value = ceiling * fraction;
          chart.append(
            svg('line', { class: 'grid', x1: left, x2: width - right, y1: y(value), y2: y(value) }),
            svg('text', { class: 'axis', x: left - 6, y: y(value) + 4, 'text-anchor': 'end' }, fmtPct(value)));
        }
        blocks.forEach((block, i) => {
          const share = isNum(block.share) ? block.share : 0;
          const x = left + i * slot + slot * 0.12;
          const barTop = y(share);
          chart.append(svg('rect', {
            class: 'bar', x: x.toFixed(2), y: barTop.toFixed(2), width: (slot * 0.76).toFixed(2),
            height: Math.max(top + plotHeight - barTop, 0).toFixed(2), rx: 2,
          }, svg('title', {}, `Block ${blockName(block.block)}: ${fmtPct(block.share)} of the variance (${fmtNum(block.variance)})`)));
          if (i % labelEvery === 0) {
            chart.append(svg('text', {
              class: 'axis', x: (left + (i + 0.5) * slot).toFixed(2), y: top + plotHeight + 16, 'text-anchor': 'middle',
            }, blockName(block.block)));
          }
        });
        chart.append(svg('text', {
          class: 'axis-title', x: left + plotWidth / 2, y: height - 4, 'text-anchor': 'middle',
        }, 'Block'));
        return chart;
      }

      function blockName(block) { return isNum(block) ? String(block) : 'other'; }

      function shareList(components, limit) {
        const top = components.filter((c) => isNum(c.share))
          .sort((a, b) => b.share - a.share || a.index - b.index)
          .slice(0, limit);
        const max = maxOf(top, (c) => c.share);
        return h('ol', { class: 'bars', id: 'share-list' }, top.map((c) =>
          h('li', { class: 'bar-row' },
            h('a', { class: 'bar-label', href: `#/component/${c.index}`, title: c.kind ? `${c.name} (${c.kind})` : c.name }, c.name),
            bar(c.share, max),
            h('span', { class: 'bar-value' }, fmtPct(c.share)))));
      }

      async function overviewPage(view, root) {
        const title = heading('Run overview');
        const body = h('div', {}, loadingNote('Loading the run…'));
        root.append(title, body);
        const [run, components] = await Promise.all([loadRun(), loadComponents()]);
        if (!view.alive) return;

        const model = run.model || {};
        const sha = typeof model.weightsSHA256 === 'string' ? model.weightsSHA256 : '';
        const blocks = Array.isArray(run.blocks) ? run.blocks : [];
        const shaValue = sha
          ? h('code', { id: 'weights-sha', title: sha }, sha.length > 16 ? sha.slice(0, 12) + '…' : sha)
          : '—';

        body.replaceChildren(
          h('p', { class: 'subtitle' }, h('code', { id: 'run-path', class: 'path' }, run.run || '')),
          h('section', { class: 'card', 'aria-label': 'Run' }, facts([
            ['Model', h('span', { id: 'model-id' }, model.id || '—')],
            ['Weights (SHA-256)', shaValue],
            ['Convention', run.convention || '—'],
            ['Family', run.family || '—'],
            ['Images', fmtCount(run.rows)],
            ['Components', h('a', { href: '#/components' }, fmtCount(run.componentCount))],
            ['Aligned (CompAlign)', yesNo(run.aligned)],
            ['TextSpan', yesNo(run.textspan)],
            ['Text features', yesNo(run.text)],
            ['Heatmaps', yesNo(run.heatmaps)],
            ['Sum of the components\u2019 variances', fmtNum(run.componentVarianceSum)],
          ])),
          section('blocks-heading', 'Share of the variance by block',
            h('p', { class: 'hint', id: 'blocks-caption' },
              'Each block\u2019s share of the summed variance of the components over the run\u2019s images (covariances between components left out, so the shares add up to 100%; \u201cother\u201d: components of no block, such as the read-out\u2019s constant).'),
            blocks.length ? blockChart(blocks, 'blocks-caption') : h('p', { class: 'status' }, 'No block statistics.'),
            blocks.length ? h('details', {},
              h('summary', {}, 'Show as a table'),
              h('table', { class: 'data' },
                h('thead', {}, h('tr', {}, h('th', { scope: 'col', class: 'num' }, 'Block'),
                  h('th', { scope: 'col', class: 'num' }, 'Variance'), h('th', { scope: 'col', class: 'num' }, 'Share'))),
                h('tbody', {}, blocks.map((b) => h('tr', {},
                  h('td', { class: 'num' }, blockName(b.block)), h('td', { class: 'num' }, fmtNum(b.variance)),
                  h('td', { class: 'num' }, fmtPct(b.share))))))) : null),
          section('shares-heading', `Components by share of the variance (top ${TOP_SHARES})`,
            components.length ? shareList(components, TOP_SHARES) : h('p', { class: 'status' }, 'No components.'),
            h('p', {}, h('a', { href: '#/components', class: 'more' }, `All ${components.length} components →`))));
      }

      function fmtCount(n) {
        return isNum(n) ? n.toLocaleString() : '—';
      }

      // ---------------------------------------------------------------- #/components

      const SORTS = {
        name: { first: 'asc', missing: (c) => !c.name, compare: (a, b) => collator.compare(a.name || '', b.name || '') },
        block: { first: 'asc', missing: (c) => !isNum(c.block), compare: (a, b) => nullLast(a.block, b.block) || nullLast(a.head, b.head) },
        share: { first: 'desc', missing: (c) => !isNum(c.share), compare: (a, b) => nullLast(a.share, b.share) },
      };

      function nullLast(a, b) {
        const na = !isNum(a);
        const nb = !isNum(b);
        if (na || nb) return na === nb ? 0 : na ? 1 : -1;
        return a - b;
      }

      function parseSort(text) {
        const match = /^(name|block|share)-(asc|desc)$/.exec(text || '');
        return match ? { key: match[1], dir: match[2] } : null;
      }

      function descriptionList(descriptions, limit) {
        if (!Array.isArray(descriptions) || descriptions.length === 0) return h('span', { class: 'muted' }, '—');
        return h('ul', { class: 'descriptions-short' },
          descriptions.slice(0, limit).map((d) => h('li', {}, d.text)));
      }

      async function componentsPage(view, root, params) {
        const title = heading('Components');
        const body = h('div', {}, loadingNote('Loading components…'));
        root.append(title, body);
        const [run, components] = await Promise.all([loadRun(), loadComponents()]);
        if (!view.alive) return;

        const top = RANK_TOPS.includes(Number(params.get('top'))) ? Number(params.get('top')) : 20;
        const state = {
          rank: params.get('rank') || '',
          top,
          filter: params.get('filter') || '',
          sort: parseSort(params.get('sort')),
        };
        const syncUrl = () => replaceQuery(view, '/components', {
          rank: state.rank.trim() ? state.rank : '',
          top: state.top !== 20 ? state.top : '',
          filter: state.filter,
          sort: state.sort ? `${state.sort.key}-${state.sort.dir}` : '',
        });

        // Ranking for a text.
        const rankInput = h('input', {
          id: 'rank-text', type: 'search', placeholder: 'Rank components for a text…', autocomplete: 'off',
          spellcheck: 'false', value: state.rank, disabled: !run.text, 'aria-describedby': 'rank-status',
        });
        const topSelect = h('select', { id: 'rank-top' },
          RANK_TOPS.map((k) => h('option', { value: String(k), selected: k === state.top }, String(k))));
        const rankStatus = h('p', { id: 'rank-status', class: 'status', 'aria-live': 'polite' });
        const rankList = h('ol', { id: 'rank-results', class: 'rank-list', 'aria-label': 'Components ranked for the text' });
        const rankRequest = latestRequest(view);

        const renderRank = (body) => {
          const items = Array.isArray(body.components) ? body.components : [];
          const max = maxOf(items, (c) => c.variance);
          rankList.replaceChildren(...items.map((c) => h('li', { dataset: { testid: 'rank-entry', index: c.index } },
            h('a', { class: 'rank-link', href: `#/component/${c.index}` },
              h('span', { class: 'rank-name' }, c.name),
              bar(c.variance, max),
              h('span', { class: 'rank-value' }, fmtNum(c.variance),
                h('span', { class: 'muted' }, ` · ${fmtPct(c.share)} of its variance`))))));
          rankStatus.textContent = items.length
            ? `The ${items.length} components with the most variance along ${quoted(body.text)}.`
            : `No components for ${quoted(body.text)}.`;
        };

        const rank = async () => {
          const text = rankInput.value;
          if (!text.trim()) {
            rankRequest.cancel();
            rankList.replaceChildren();
            rankStatus.textContent = 'Type a text to rank the components by the variance of their contribution along its direction.';
            clearError('rank');
            return;
          }
          rankStatus.textContent = 'Ranking…';
          try {
            const answer = await rankRequest.get(withQuery('/api/rank', { text, top: state.top }));
            renderRank(answer);
            clearError('rank');
          } catch (error) {
            if (isAbort(error)) return;
            rankStatus.textContent = 'The ranking failed.';
            showError(error, 'rank');
          }
        };
        const rankSoon = debounce(view, RANK_DEBOUNCE_MS, rank);
        rankInput.addEventListener('input', () => {
          state.rank = rankInput.value;
          syncUrl();
          rankSoon();
        });
        topSelect.addEventListener('change', () => {
          state.top = Number(topSelect.value);
          syncUrl();
          rankSoon.cancel();
          rank();
        });

        const rankSection = h('section', { class: 'card', 'aria-labelledby': 'rank-heading' },
          h('h2', { id: 'rank-heading' }, h('label', { for: 'rank-text' }, 'Rank components for a text')),
          h('div', { class: 'field-row' }, rankInput,
            h('label', { for: 'rank-top', class: 'inline-label' }, 'Show'), topSelect),
          rankStatus, rankList);
        if (!run.text) {
          topSelect.disabled = true;
          rankStatus.textContent = 'This run has no text features, so components cannot be ranked for a text.';
        }

        // The table.
        const hasDescriptions = Boolean(run.textspan) || components.some((c) => Array.isArray(c.descriptions) && c.descriptions.length);
        const maxShare = maxOf(components, (c) => c.share);
        const filterInput = h('input', {
          id: 'component-filter', type: 'search', placeholder: 'Filter by name, kind or description…',
          autocomplete: 'off', value: state.filter, 'aria-describedby': 'component-count',
        });
        const countNote = h('p', { id: 'component-count', class: 'status', 'aria-live': 'polite' });

        const rows = components.map((c) => {
          const link = h('a', { href: `#/component/${c.index}` }, c.name);
          const tr = h('tr', { dataset: { testid: 'component-row', index: c.index } },
            h('th', { scope: 'row' }, link, c.constant ? h('span', { class: 'badge' }, 'constant') : null),
            h('td', {}, c.kind || '—'),
            h('td', { class: 'num' }, isNum(c.block) ? String(c.block) : '—'),
            h('td', { class: 'num' }, isNum(c.head) ? String(c.head) : ''),
            h('td', { class: 'share-cell' }, bar(c.share, maxShare), h('span', { class: 'bar-value' }, fmtPct(c.share))),
            hasDescriptions ? h('td', {}, descriptionList(c.descriptions, 3)) : null);
          tr.addEventListener('click', (event) => {
            if (event.target.closest('a, button, input')) return;
            const selection = window.getSelection();
            if (selection && selection.type === 'Range' && tr.contains(selection.anchorNode)) return; // selecting text is not a click
            location.hash = `#/component/${c.index}`;
          });
          const haystack = [c.name, c.kind, ...(Array.isArray(c.descriptions) ? c.descriptions.map((d) => d.text) : [])]
            .filter((x) => typeof x === 'string').join('\n').toLowerCase();
          return { c, tr, haystack };
        });

        const headerCells = [];
        const column = (label, key, className) => {
          const th = h('th', { scope: 'col', class: className || null });
          if (key) {
            th.append(h('button', { type: 'button', class: 'sort', onclick: () => toggleSort(key) },
              label, h('span', { class: 'sort-icon', 'aria-hidden': 'true' })));
            th.dataset.sort = key;
          } else {
            th.textContent = label;
          }
          headerCells.push(th);
          return th;
        };
        const tbody = h('tbody');
        const emptyRow = h('tr', { class: 'empty', hidden: true },
          h('td', { colspan: String(hasDescriptions ? 6 : 5) }, 'No component matches the filter.'));
        const table = h('table', { class: 'data components', id: 'component-table' },
          h('caption', { class: 'visually-hidden' }, 'Components of the run; the sortable columns have buttons in their headers.'),
          h('thead', {}, h('tr', {},
            column('Name', 'name'), column('Kind'), column('Block', 'block', 'num'), column('Head', null, 'num'),
            column('Share of variance', 'share'), hasDescriptions ? column('Top descriptions') : null)),
          tbody);

        function applySort() {
          for (const th of headerCells) {
            const key = th.dataset.sort;
            if (!key) continue;
            const active = state.sort && state.sort.key === key;
            th.setAttribute('aria-sort', active ? (state.sort.dir === 'asc' ? 'ascending' : 'descending') : 'none');
            th.querySelector('.sort-icon').textContent = active ? (state.sort.dir === 'asc' ? '▲' : '▼') : '↕';
          }
          const sorted = rows.slice();
          if (state.sort) {
            const { compare, missing } = SORTS[state.sort.key];
            const sign = state.sort.dir === 'asc' ? 1 : -1;
            // Components without the value (e.g. `init` has no block) stay last in both directions.
            sorted.sort((a, b) => (missing(a.c) - missing(b.c)) || sign * compare(a.c, b.c) || a.c.index - b.c.index);
          }
          tbody.append(...sorted.map((r) => r.tr), emptyRow);
        }

        function toggleSort(key) {
          if (state.sort && state.sort.key === key) state.sort = { key, dir: state.sort.dir === 'asc' ? 'desc' : 'asc' };
          else state.sort = { key, dir: SORTS[key].first };
          applySort();
          syncUrl();
        }

        function applyFilter() {
          const terms = state.filter.toLowerCase().split(/\s+/).filter(Boolean);
          let shown = 0;
          for (const r of rows) {
            const match = terms.every((t) => r.haystack.includes(t));
            r.tr.hidden = !match;
            if (match) shown += 1;
          }
          emptyRow.hidden = shown > 0;
          countNote.textContent = terms.length
            ? `Showing ${shown} of ${rows.length} components.`
            : `${rows.length} components.`;
        }

        filterInput.addEventListener('input', () => {
          state.filter = filterInput.value;
          applyFilter();
          syncUrl();
        });

        body.replaceChildren(
          rankSection,
          h('section', { class: 'card', 'aria-labelledby': 'table-heading' },
            h('h2', { id: 'table-heading' }, 'All components'),
            h('div', { class: 'field-row' },
              h('label', { for: 'component-filter', class: 'inline-label' }, 'Filter'), filterInput),
            countNote,
            h('div', { class: 'table-wrap' }, table)));
        applySort();
        applyFilter();
        if (run.text) rank();
      }

      // ---------------------------------------------------------------- #/component/{i}

      async function componentPage(view, root, index, params) {
        const title = heading(`Component ${index}`);
        const body = h('div', {}, loadingNote('Loading the component…'));
        root.append(title, body);
        const [run, detail] = await Promise.all([loadRun(), getJSON(`/api/components/${index}`, view.signal)]);
        if (!view.alive) return;

        const c = detail.component || {};
        const directions = Array.isArray(detail.directions) ? detail.directions : [];
        const name = c.name || `Component ${index}`;
        title.textContent = name;
        setTitle(name);
        const count = isNum(run.componentCount) ? run.componentCount : Infinity;

        // Descriptions.
        const descriptions = Array.isArray(c.descriptions) ? c.descriptions : null;
        let descriptionContent;
        if (descriptions && descriptions.length) {
          // varianceExplained: the fraction (0...1) of the component's variance the description explained.
          descriptionContent = h('ol', { class: 'bars descriptions', id: 'descriptions' }, descriptions.map((d) =>
            h('li', { class: 'bar-row' },
              h('span', { class: 'bar-label description-text' }, d.text),
              bar(d.varianceExplained, 1),
              h('span', { class: 'bar-value' }, isNum(d.varianceExplained) ? `${fmtPct(d.varianceExplained)} of its variance` : '—'))));
        } else {
          descriptionContent = h('p', { class: 'status', id: 'descriptions' },
            run.textspan ? 'No TextSpan descriptions for this component.' : 'TextSpan has not labelled this run.');
        }

        // Principal directions.
        const directionContent = directions.length
          ? directions.map((d) => h('section', { class: 'direction', 'aria-label': `Direction ${d.rank}` },
            h('h3', {}, `Direction ${d.rank}`,
              h('span', { class: 'muted direction-share' },
                ` · ${fmtPct(d.share)} of the component\u2019s variance (variance ${fmtNum(d.variance)})`)),
            strip('Highest', d.top),
            strip('Lowest', d.bottom)))
          : h('p', { class: 'status' }, c.constant ? 'A constant component has no principal directions.' : 'No principal directions.');

        // Nearest neighbours.
        const firstTop = directions.length && Array.isArray(directions[0].top) && directions[0].top.length
          ? directions[0].top[0].row : 0;
        const rowParam = params.get('row');
        const initialRow = rowParam !== null && isIndex(rowParam) ? Number(rowParam) : firstTop;
        const maxRow = isNum(run.rows) ? run.rows - 1 : null;
        const rowInput = h('input', {
          id: 'neighbor-row', type: 'number', min: '0', max: maxRow === null ? null : String(maxRow), step: '1',
          value: String(initialRow), inputmode: 'numeric',
        });
        const topInput = h('input', { id: 'neighbor-top', type: 'number', min: '1', max: '100', step: '1', value: '12' });
        const neighborStatus = h('p', { id: 'neighbor-status', class: 'status', 'aria-live': 'polite' });
        const queryBox = h('div', { class: 'neighbor-query', id: 'neighbor-query' });
        const neighborList = h('div', { class: 'strip wrap', id: 'neighbors' });
        const neighborRequest = latestRequest(view);

        const loadNeighbors = async () => {
          const rowText = rowInput.value.trim();
          const row = Number(rowText);
          const k = Math.min(Math.max(Math.round(Number(topInput.value)) || 12, 1), 100);
          if (!isIndex(rowText) || (maxRow !== null && row > maxRow)) {
            neighborRequest.cancel();
            neighborStatus.textContent = maxRow !== null
              ? `Choose an image row between 0 and ${maxRow}.` : 'Choose an image row (0 or more).';
            return;
          }
          replaceQuery(view, `/component/${index}`, { row: row !== firstTop ? row : '' });
          neighborStatus.textContent = 'Finding neighbours…';
          queryBox.replaceChildren(h('span', { class: 'muted' }, 'Image'), thumb(row, 'query', 'query'));
          try {
            const answer = await neighborRequest.get(withQuery(`/api/components/${index}/neighbors`, { row, top: k }));
            const neighbors = Array.isArray(answer.neighbors) ? answer.neighbors : [];
            neighborList.replaceChildren(...neighbors.map((n) =>
              thumb(n.row, n.row === row ? 'itself' : `cos ${isNum(n.similarity) ? n.similarity.toFixed(3) : '—'}`)));
            neighborStatus.textContent = neighbors.length
              ? `The ${neighbors.length} images nearest to image ${row} by this component\u2019s contribution (cosine similarity).`
              : 'No neighbours.';
            clearError('neighbors');
          } catch (error) {
            if (isAbort(error)) return;
            neighborStatus.textContent = 'Finding the neighbours failed.';
            showError(error, 'neighbors');
          }
        };
        const neighborsSoon = debounce(view, NEIGHBOR_DEBOUNCE_MS, loadNeighbors);
        rowInput.addEventListener('input', neighborsSoon);
        topInput.addEventListener('input', neighborsSoon);
        const form = h('form', { class: 'field-row', id: 'neighbor-form' },
          h('label', { for: 'neighbor-row', class: 'inline-label' }, 'Image row'), rowInput,
          h('label', { for: 'neighbor-top', class: 'inline-label' }, 'How many'), topInput,
          h('button', { type: 'submit' }, 'Show'));
        form.addEventListener('submit', (event) => {
          event.preventDefault();
          neighborsSoon.cancel();
          loadNeighbors();
        });

        body.replaceChildren(
          pager(index > 0 ? { href: `#/component/${index - 1}`, label: 'Previous component' } : null,
            index + 1 < count ? { href: `#/component/${index + 1}`, label: 'Next component' } : null),
          h('section', { class: 'card', 'aria-label': 'Component' }, facts([
            ['Kind', h('span', { id: 'component-kind' }, c.kind || '—')],
            ['Index', String(isNum(c.index) ? c.index : index)],
            ['Block', isNum(c.block) ? String(c.block) : '—'],
            isNum(c.head) ? ['Head', String(c.head)] : null,
            ['Variance', fmtNum(c.variance)],
            ['Share of the variance', fmtPct(c.share)],
            c.constant ? ['Constant', 'yes (the same for every image)'] : null,
          ])),
          section('descriptions-heading', 'Descriptions', descriptionContent),
          section('directions-heading', 'Principal directions',
            h('p', { class: 'hint' }, 'For each of the component\u2019s top principal directions, the images whose contribution lies furthest along it, and furthest against it.'),
            directionContent),
          section('neighbors-heading', 'Nearest neighbours',
            h('p', { class: 'hint' }, 'The images whose contribution from this component is most similar (cosine) to the chosen image\u2019s.'),
            form, neighborStatus, h('div', { class: 'neighbor-layout' }, queryBox, neighborList)));
        loadNeighbors();
      }

      function strip(label, items) {
        const list = Array.isArray(items) ? items.slice(0, STRIP_SIZE) : [];
        return h('div', { class: 'strip-group' },
          h('h4', {}, label),
          list.length
            ? h('div', { class: 'strip' }, list.map((item) => thumb(item.row, fmtSigned(item.value))))
            : h('p', { class: 'status' }, 'No images.'));
      }

      // ---------------------------------------------------------------- #/image/{row}

      async function imagePage(view, root, row, params) {
        const title = heading(`Image ${row}`);
        const body = h('div', {}, loadingNote('Loading the image…'));
        root.append(title, body);
        const [run, info] = await Promise.all([loadRun(), getJSON(`/api/images/${row}`, view.signal)]);
        if (!view.alive) return;

        const name = typeof info.name === 'string' && info.name ? info.name : `Image ${row}`;
        title.textContent = name;
        setTitle(name);
        const rows = isNum(run.rows) ? run.rows : Infinity;

        const state = {
          text: params.get('text') || '',
          selection: new Set(),
          pendingSelection: (params.get('components') || '').split(',').filter(isIndex).map(Number),
          answer: null, // the contributions for state.answer.text
          names: new Map(),
        };

        // The image and the heatmap.
        const image = h('img', { id: 'image', src: imageUrl(row), alt: info.label ? `${name} (${info.label})` : name });
        const heatmap = h('img', { id: 'heatmap', alt: '', hidden: true });
        const heatmapPlaceholder = h('div', { class: 'heatmap-placeholder', 'aria-hidden': 'true' });
        const heatmapStatus = h('p', { id: 'heatmap-status', class: 'status', 'aria-live': 'polite' });
        const heatmapFigure = h('figure', { class: 'figure heatmap-figure', id: 'heatmap-figure', hidden: true },
          h('div', { class: 'frame' }, heatmap, heatmapPlaceholder,
            h('div', { class: 'busy-overlay' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), 'Computing…')),
          h('figcaption', {}, heatmapStatus));

        // Classes.
        const classes = Array.isArray(info.classes) ? info.classes : null;
        let classContent = null;
        if (classes && classes.length) {
          const max = maxOf(classes, (k) => k.score);
          classContent = h('ol', { class: 'bars classes', id: 'classes' }, classes.map((k) =>
            h('li', { class: 'bar-row' }, h('span', { class: 'bar-label' }, k.name), bar(k.score, max),
              h('span', { class: 'bar-value' }, fmtNum(k.score)))));
        }

        // Contributions along a text.
        const textInput = h('input', {
          id: 'contrib-text', type: 'search', placeholder: 'A text, e.g. “a photo of a dog”', autocomplete: 'off',
          spellcheck: 'false', value: state.text, disabled: !run.text, 'aria-describedby': 'contrib-status',
        });
        const contribStatus = h('p', { id: 'contrib-status', class: 'status', 'aria-live': 'polite' });
        const totalNote = h('p', { id: 'contrib-total', class: 'total' });
        const chart = h('ol', { id: 'contrib-chart', class: 'contrib-chart', 'aria-label': 'Contributions along the text' });
        const heatmapButton = h('button', { type: 'button', id: 'heatmap-button', class: 'primary', disabled: true,
          'aria-describedby': 'heatmap-hint' }, 'Heatmap');
        const heatmapHint = h('p', { id: 'heatmap-hint', class: 'hint' });
        const selectTop = h('button', { type: 'button', id: 'select-top', disabled: true }, `Select top ${DEFAULT_SELECTION} heads`);
        const selectNone = h('button', { type: 'button', id: 'select-none', disabled: true }, 'Clear selection');
        const request = latestRequest(view);

        const prevLink = row > 0 ? h('a', { rel: 'prev' }, `← Image ${row - 1}`) : h('span');
        const nextLink = row + 1 < rows ? h('a', { rel: 'next' }, `Image ${row + 1} →`) : h('span');
        const syncUrl = () => {
          const text = state.text.trim() ? state.text : '';
          const selected = text && state.answer ? [...state.selection] : [];
          replaceQuery(view, `/image/${row}`, { text, components: selected });
          // Keep the text when stepping to the neighbouring images.
          if (prevLink.tagName === 'A') prevLink.href = '#' + withQuery(`/image/${row - 1}`, { text });
          if (nextLink.tagName === 'A') nextLink.href = '#' + withQuery(`/image/${row + 1}`, { text });
        };

        function updateControls() {
          const typed = Boolean(state.text.trim());
          const ready = Boolean(state.answer) && state.answer.text === state.text;
          heatmapButton.disabled = !(run.heatmaps && typed && ready && state.selection.size > 0);
          selectTop.disabled = !ready;
          selectNone.disabled = !ready || state.selection.size === 0;
          if (!run.heatmaps) heatmapHint.textContent = 'Heatmaps are not available for this run.';
          else if (!typed) heatmapHint.textContent = 'Type a text to draw a heatmap.';
          else if (state.selection.size === 0) heatmapHint.textContent = 'Select at least one component (click its bar).';
          else {
            const names = [...state.selection].map((i) => state.names.get(i) || `#${i}`);
            heatmapHint.textContent = `Selected: ${names.join(', ')}.`;
          }
          for (const button of chart.querySelectorAll('[data-testid="contrib-bar"]')) {
            const selected = state.selection.has(Number(button.dataset.index));
            button.setAttribute('aria-pressed', String(selected));
            button.classList.toggle('selected', selected);
          }
        }

        function renderContributions(answer) {
          const items = (Array.isArray(answer.components) ? answer.components : []).filter((x) => isNum(x.value));
          for (const item of items) state.names.set(item.index, item.name);
          const sorted = items.slice().sort((a, b) => Math.abs(b.value) - Math.abs(a.value) || a.index - b.index);
          const shown = sorted.slice(0, CONTRIB_BARS);
          const max = maxOf(shown, (x) => Math.abs(x.value)) || 1;

          const known = new Set(items.map((x) => x.index));
          const pending = state.pendingSelection.filter((i) => known.has(i));
          // Heatmaps are of heads' token terms: the default selection is the top heads (any component when there are none).
          const heads = sorted.filter((x) => x.kind === 'head');
          state.selection = new Set(pending.length ? pending : (heads.length ? heads : sorted).slice(0, DEFAULT_SELECTION).map((x) => x.index));
          state.pendingSelection = [];

          chart.replaceChildren(...shown.map((item) => {
            const positive = item.value >= 0;
            const half = (Math.abs(item.value) / max) * 50;
            const fill = h('span', {
              class: 'contrib-fill',
              style: positive ? { left: '50%', width: half.toFixed(2) + '%' } : { left: (50 - half).toFixed(2) + '%', width: half.toFixed(2) + '%' },
            });
            const button = h('button', {
              type: 'button', class: 'contrib-bar ' + (positive ? 'positive' : 'negative'),
              dataset: { testid: 'contrib-bar', index: item.index }, 'aria-pressed': 'false',
              title: `${item.name}: ${fmtSigned(item.value)} (click to select it for the heatmap)`,
              onclick: () => {
                if (state.selection.has(item.index)) state.selection.delete(item.index);
                else state.selection.add(item.index);
                updateControls();
                syncUrl();
              },
            },
            h('span', { class: 'check', 'aria-hidden': 'true' }),
            h('span', { class: 'contrib-name' }, item.name),
            h('span', { class: 'contrib-track', 'aria-hidden': 'true' }, h('span', { class: 'zero' }), fill),
            h('span', { class: 'contrib-value' }, fmtSigned(item.value)));
            return h('li', { class: 'contrib-row' }, button,
              h('a', { class: 'contrib-link', href: `#/component/${item.index}`, title: `Open ${item.name}` },
                h('span', { 'aria-hidden': 'true' }, '↗'), h('span', { class: 'visually-hidden' }, `Open ${item.name}`)));
          }));
          const sum = items.reduce((s, x) => s + x.value, 0);
          totalNote.textContent = `Total along ${quoted(answer.text)}: ${fmtSigned(answer.total)} · the ${items.length} components sum to ${fmtSigned(sum)}`
            + (isNum(answer.total) ? ` (constant term ${fmtSigned(answer.total - sum)}).` : '.');
          contribStatus.textContent = items.length > shown.length
            ? `The ${shown.length} largest of ${items.length} contributions by size; click a bar to select it for the heatmap.`
            : 'Click a bar to select it for the heatmap.';
        }

        const loadContributions = async () => {
          const text = textInput.value;
          if (!text.trim()) {
            request.cancel();
            state.answer = null;
            chart.replaceChildren();
            totalNote.textContent = '';
            contribStatus.textContent = 'Type a text to see each component\u2019s contribution along it.';
            clearError('contributions');
            updateControls();
            return;
          }
          contribStatus.textContent = 'Computing contributions…';
          try {
            const answer = await request.get(withQuery(`/api/images/${row}/contributions`, { text }));
            state.answer = { text, body: answer };
            renderContributions(answer);
            clearError('contributions');
          } catch (error) {
            if (isAbort(error)) return;
            contribStatus.textContent = 'The contributions could not be computed.';
            showError(error, 'contributions');
          }
          updateControls();
          syncUrl();
        };
        const contributionsSoon = debounce(view, CONTRIB_DEBOUNCE_MS, loadContributions);
        textInput.addEventListener('input', () => {
          state.text = textInput.value;
          updateControls();
          syncUrl();
          contributionsSoon();
        });
        selectTop.addEventListener('click', () => {
          if (!state.answer) return;
          state.pendingSelection = [];
          renderContributions(state.answer.body);
          updateControls();
          syncUrl();
        });
        selectNone.addEventListener('click', () => {
          state.selection.clear();
          updateControls();
          syncUrl();
        });

        // The heatmap: the image's own URL, so that the browser caches it; on failure the same URL is
        // fetched again to read the server's error message.
        let heatmapToken = 0;
        heatmapButton.addEventListener('click', () => {
          if (heatmapButton.disabled) return;
          const text = state.text;
          const selected = [...state.selection];
          const names = selected.map((i) => state.names.get(i) || `#${i}`);
          const url = withQuery(`/api/images/${row}/heatmap`, { text, components: selected });
          const token = ++heatmapToken;
          heatmapFigure.hidden = false;
          heatmapFigure.classList.add('busy');
          heatmapFigure.setAttribute('aria-busy', 'true');
          heatmapStatus.textContent = `Computing the heatmap of ${names.join(', ')} for ${quoted(text)}…`;
          const finish = () => {
            heatmapFigure.classList.remove('busy');
            heatmapFigure.removeAttribute('aria-busy');
          };
          heatmap.onload = () => {
            if (token !== heatmapToken || !view.alive) return;
            finish();
            heatmap.hidden = false;
            heatmapPlaceholder.hidden = true;
            heatmap.alt = `Heatmap of ${names.join(', ')} for ${quoted(text)} over ${name}`;
            heatmapStatus.textContent = `Heatmap of ${names.join(', ')} for ${quoted(text)}.`;
            clearError('heatmap');
          };
          heatmap.onerror = async () => {
            if (token !== heatmapToken || !view.alive) return;
            finish();
            heatmapStatus.textContent = 'The heatmap could not be computed.';
            try {
              await getJSON(url, view.signal);
              showError(new ApiError('The heatmap is not a readable image.', 0), 'heatmap');
            } catch (error) {
              if (token === heatmapToken) showError(error, 'heatmap');
            }
          };
          heatmap.src = url;
          const box = heatmapFigure.getBoundingClientRect();
          if (box.bottom < 0 || box.top > window.innerHeight) heatmapFigure.scrollIntoView({ block: 'nearest' });
        });

        syncUrl();
        body.replaceChildren(
          h('nav', { class: 'pager', 'aria-label': 'Neighbouring images' }, prevLink, nextLink),
          h('div', { class: 'image-layout' },
            h('figure', { class: 'figure' }, h('div', { class: 'frame' }, image),
              h('figcaption', {}, h('span', { id: 'image-name' }, name), ' · row ', String(row),
                info.label ? [' · label ', h('strong', { id: 'image-label' }, info.label)] : null)),
            heatmapFigure,
            classContent ? section('classes-heading', 'Top classes', classContent) : null),
          section('contrib-heading', 'Contributions along a text',
            h('div', { class: 'field-row' },
              h('label', { for: 'contrib-text', class: 'inline-label' }, 'Text'), textInput),
            run.text ? null : h('p', { class: 'status' }, 'This run has no text features, so contributions cannot be computed.'),
            h('div', { class: 'field-row heatmap-controls' }, heatmapButton, selectTop, selectNone),
            heatmapHint,
            contribStatus, totalNote,
            h('div', { class: 'legend', 'aria-hidden': 'true' },
              h('span', { class: 'swatch positive' }), 'along the text', h('span', { class: 'swatch negative' }), 'against it'),
            chart));
        updateControls();
        if (run.text) loadContributions();
        else contribStatus.textContent = '';
      }

      // ---------------------------------------------------------------- not found

      function notFoundPage(root) {
        root.append(heading('Not found'),
          h('p', {}, 'There is no page at ', h('code', {}, location.hash || '#/'), '. '),
          h('p', {}, h('a', { href: '#/' }, 'Go to the overview')));
        return Promise.resolve();
      }

      // ---------------------------------------------------------------- start

      window.addEventListener('hashchange', () => route(false));
      route(true);
      loadRun().then((run) => {
        const model = run.model || {};
        runModel.textContent = model.id || '';
        runModel.title = model.weightsSHA256 ? `Model ${model.id} · weights SHA-256 ${model.weightsSHA256}` : `Model ${model.id}`;
      }).catch((error) => showError(error));
    })();
    """#

    /// `/app.css`: the style sheet, light and dark.
    static let css: String = #"""
    /* Refract explorer. System fonts only; light and dark colour schemes. */

    :root {
      color-scheme: light dark;
      --font: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
      --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
      --bg: #f6f7f9;
      --surface: #ffffff;
      --text: #1b1e23;
      --muted: #5b6370;
      --border: #d8dce2;
      --track: #e9ecf0;
      --accent: #2463d1;
      --accent-text: #ffffff;
      --accent-soft: #dde7fa;
      --positive: #2463d1;
      --negative: #c2541b;
      --selected: #f3b61f;
      --error-bg: #fdeceb;
      --error-text: #8c1d18;
      --error-border: #f0b4b0;
      --shadow: 0 1px 2px rgba(16, 24, 40, 0.06);
      --radius: 8px;
      --nav-height: 3.25rem;
    }

    @media (prefers-color-scheme: dark) {
      :root {
        --bg: #14161a;
        --surface: #1c1f24;
        --text: #e7e9ec;
        --muted: #a0a8b3;
        --border: #343941;
        --track: #2b3038;
        --accent: #79a6ff;
        --accent-text: #0d1117;
        --accent-soft: #243250;
        --positive: #79a6ff;
        --negative: #f4935c;
        --selected: #f3c445;
        --error-bg: #3b1c1b;
        --error-text: #ffc2bd;
        --error-border: #74312d;
        --shadow: none;
      }
    }

    *, *::before, *::after { box-sizing: border-box; }

    html { -webkit-text-size-adjust: 100%; }

    body {
      margin: 0;
      font-family: var(--font);
      font-size: 15px;
      line-height: 1.45;
      color: var(--text);
      background: var(--bg);
    }

    a { color: var(--accent); text-underline-offset: 2px; }
    a:hover { text-decoration-thickness: 2px; }

    code, .path { font-family: var(--mono); font-size: 0.9em; }

    :focus-visible {
      outline: 3px solid var(--accent);
      outline-offset: 2px;
      border-radius: 3px;
    }

    h1 { font-size: 1.6rem; margin: 0.2rem 0 0.6rem; line-height: 1.2; overflow-wrap: anywhere; }
    h1:focus { outline: none; }
    h2 { font-size: 1.1rem; margin: 0 0 0.75rem; }
    h3 { font-size: 1rem; margin: 1.1rem 0 0.5rem; }
    h4 { font-size: 0.8rem; margin: 0.4rem 0 0.3rem; text-transform: uppercase; letter-spacing: 0.04em; color: var(--muted); }

    .visually-hidden {
      position: absolute !important;
      width: 1px; height: 1px;
      padding: 0; margin: -1px;
      overflow: hidden; clip: rect(0 0 0 0);
      white-space: nowrap; border: 0;
    }

    .muted { color: var(--muted); }

    /* ------------------------------------------------------------ top bar and error box */

    .topbar {
      position: sticky;
      top: 0;
      z-index: 10;
      background: var(--surface);
      border-bottom: 1px solid var(--border);
    }

    .nav {
      display: flex;
      align-items: center;
      gap: 0.25rem 1.25rem;
      flex-wrap: wrap;
      max-width: 1200px;
      margin: 0 auto;
      padding: 0.6rem 1.25rem;
      min-height: var(--nav-height);
    }

    .brand { font-weight: 700; color: var(--text); text-decoration: none; margin-right: 0.5rem; }
    .nav-link { color: var(--muted); text-decoration: none; padding: 0.2rem 0; border-bottom: 2px solid transparent; }
    .nav-link:hover { color: var(--text); }
    .nav-link[aria-current="page"] { color: var(--text); border-bottom-color: var(--accent); }
    .nav-model {
      margin-left: auto;
      font-family: var(--mono);
      font-size: 0.85rem;
      color: var(--muted);
      overflow-wrap: anywhere;
    }

    .error-bar {
      display: flex;
      align-items: flex-start;
      gap: 1rem;
      max-width: 1200px;
      margin: 0 auto 0.6rem;
      padding: 0.6rem 0.9rem;
      background: var(--error-bg);
      color: var(--error-text);
      border: 1px solid var(--error-border);
      border-radius: var(--radius);
    }
    .error-bar[hidden] { display: none; }
    .error-bar p { margin: 0; flex: 1; font-weight: 600; overflow-wrap: anywhere; white-space: pre-wrap; }
    .error-dismiss { flex: none; }

    /* ------------------------------------------------------------ layout */

    main { max-width: 1200px; margin: 0 auto; padding: 1.25rem; }
    main:focus { outline: none; }

    .card {
      background: var(--surface);
      border: 1px solid var(--border);
      border-radius: var(--radius);
      box-shadow: var(--shadow);
      padding: 1rem 1.1rem;
      margin: 0 0 1rem;
    }

    .subtitle { margin: -0.3rem 0 1rem; color: var(--muted); overflow-wrap: anywhere; }
    .hint { color: var(--muted); margin: -0.25rem 0 0.75rem; font-size: 0.9rem; }
    .status { color: var(--muted); margin: 0.5rem 0; font-size: 0.9rem; }
    .status:empty { display: none; }
    .more { font-weight: 600; }

    .pager { display: flex; justify-content: space-between; margin: -0.25rem 0 0.75rem; font-size: 0.9rem; }

    .facts {
      display: grid;
      grid-template-columns: repeat(auto-fill, minmax(190px, 1fr));
      gap: 0.75rem 1.25rem;
      margin: 0;
    }
    .fact { min-width: 0; }
    .fact dt { font-size: 0.75rem; text-transform: uppercase; letter-spacing: 0.04em; color: var(--muted); }
    .fact dd { margin: 0.1rem 0 0; font-weight: 600; overflow-wrap: anywhere; }

    .badge {
      display: inline-block;
      margin-left: 0.4rem;
      padding: 0 0.4rem;
      font-size: 0.72rem;
      font-weight: 600;
      border-radius: 999px;
      background: var(--track);
      color: var(--muted);
      vertical-align: 0.1em;
    }

    /* ------------------------------------------------------------ forms */

    input, select, button { font: inherit; color: inherit; }

    input[type="search"], input[type="number"], select {
      background: var(--surface);
      border: 1px solid var(--border);
      border-radius: 6px;
      padding: 0.4rem 0.6rem;
      min-height: 2.25rem;
    }
    input[type="search"] { flex: 1 1 18rem; min-width: 0; max-width: 40rem; }
    input[type="number"] { width: 6.5rem; }
    input:disabled, select:disabled { opacity: 0.6; }

    button {
      background: var(--surface);
      border: 1px solid var(--border);
      border-radius: 6px;
      padding: 0.4rem 0.85rem;
      min-height: 2.25rem;
      cursor: pointer;
    }
    button:hover:not(:disabled) { border-color: var(--accent); }
    button:disabled { cursor: not-allowed; opacity: 0.55; }
    button.primary { background: var(--accent); border-color: var(--accent); color: var(--accent-text); font-weight: 600; }

    .field-row { display: flex; flex-wrap: wrap; align-items: center; gap: 0.5rem 0.75rem; }
    .inline-label { font-weight: 600; }
    h2 label { cursor: pointer; }

    /* ------------------------------------------------------------ bars */

    .track {
      display: block;
      height: 0.7rem;
      background: var(--track);
      border-radius: 999px;
      overflow: hidden;
      min-width: 3rem;
    }
    .track .fill { display: block; height: 100%; background: var(--accent); border-radius: 999px; }

    .bars { list-style: none; margin: 0; padding: 0; }
    .bar-row {
      display: grid;
      grid-template-columns: minmax(7rem, 14rem) 1fr minmax(4.5rem, auto);
      align-items: center;
      gap: 0.75rem;
      padding: 0.18rem 0;
    }
    .bar-label { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
    .bar-value { font-variant-numeric: tabular-nums; text-align: right; font-size: 0.88rem; white-space: nowrap; }
    .descriptions .bar-row { grid-template-columns: minmax(12rem, 2fr) 1fr minmax(8rem, auto); }
    .descriptions .bar-label { white-space: normal; }

    /* ------------------------------------------------------------ charts */

    .chart { display: block; width: 100%; max-width: 860px; height: auto; }
    .chart .bar { fill: var(--accent); }
    .chart .bar:hover { opacity: 0.8; }
    .chart .grid { stroke: var(--border); stroke-width: 1; }
    .chart .axis { fill: var(--muted); font-size: 11px; font-family: var(--font); }
    .chart .axis-title { fill: var(--muted); font-size: 12px; font-family: var(--font); }

    details { margin-top: 0.5rem; }
    summary { cursor: pointer; color: var(--accent); }

    /* ------------------------------------------------------------ tables */

    .table-wrap { overflow-x: auto; margin-top: 0.5rem; }

    table.data { border-collapse: collapse; width: 100%; font-size: 0.92rem; }
    table.data th, table.data td {
      text-align: left;
      padding: 0.4rem 0.6rem;
      border-bottom: 1px solid var(--border);
      vertical-align: top;
    }
    table.data thead th { font-size: 0.8rem; color: var(--muted); white-space: nowrap; }
    table.data .num { text-align: right; font-variant-numeric: tabular-nums; }
    table.data tbody th { font-weight: 600; white-space: nowrap; }
    table.components tbody tr { cursor: pointer; }
    table.components tbody tr:hover { background: var(--accent-soft); }
    table.components tr.empty { cursor: default; }
    table.components tr.empty td { color: var(--muted); text-align: center; }
    .share-cell { min-width: 11rem; }
    .share-cell .track { display: inline-block; width: 6rem; vertical-align: middle; margin-right: 0.5rem; }
    .share-cell .bar-value { display: inline-block; min-width: 3.5rem; }

    button.sort {
      border: none;
      background: none;
      padding: 0;
      min-height: 0;
      font: inherit;
      font-weight: 700;
      color: inherit;
      display: inline-flex;
      gap: 0.3rem;
      align-items: center;
    }
    button.sort:hover { color: var(--text); }
    th[aria-sort="ascending"] button.sort, th[aria-sort="descending"] button.sort { color: var(--text); }
    .sort-icon { font-size: 0.7rem; opacity: 0.8; }

    .descriptions-short { margin: 0; padding-left: 1.1rem; }
    .descriptions-short li { margin: 0 0 0.1rem; }

    /* ------------------------------------------------------------ ranking */

    .rank-list { list-style: none; counter-reset: rank; margin: 0.25rem 0 0; padding: 0; }
    .rank-list li { counter-increment: rank; }
    .rank-link {
      display: grid;
      grid-template-columns: 2.2rem minmax(6rem, 12rem) 1fr 15rem;
      gap: 0.75rem;
      align-items: center;
      padding: 0.25rem 0.4rem;
      border-radius: 6px;
      color: var(--text);
      text-decoration: none;
    }
    .rank-link::before { content: counter(rank) "."; color: var(--muted); text-align: right; font-variant-numeric: tabular-nums; }
    .rank-link:hover { background: var(--accent-soft); }
    .rank-name { font-weight: 600; color: var(--accent); }
    .rank-value { font-variant-numeric: tabular-nums; font-size: 0.88rem; }

    /* ------------------------------------------------------------ thumbnails */

    .strip { display: flex; gap: 0.6rem; overflow-x: auto; padding-bottom: 0.3rem; }
    .strip.wrap { flex-wrap: wrap; overflow-x: visible; }
    .strip-group { margin-bottom: 0.4rem; }
    .direction { border-top: 1px solid var(--border); margin-top: 0.75rem; }
    .direction:first-of-type { border-top: none; margin-top: 0; }
    .direction h3 { margin-top: 0.75rem; }
    .direction-share { font-weight: 400; font-size: 0.9rem; }

    .thumb {
      flex: none;
      display: flex;
      flex-direction: column;
      width: 104px;
      padding: 4px;
      border: 1px solid var(--border);
      border-radius: 6px;
      background: var(--surface);
      color: var(--text);
      text-decoration: none;
    }
    .thumb:hover { border-color: var(--accent); }
    .thumb img {
      display: block;
      width: 94px;
      height: 94px;
      object-fit: cover;
      border-radius: 4px;
      background: var(--track);
    }
    .thumb-caption {
      display: flex;
      justify-content: space-between;
      gap: 0.25rem;
      font-size: 0.75rem;
      margin-top: 0.2rem;
      font-variant-numeric: tabular-nums;
    }
    .thumb-label { color: var(--muted); }
    .thumb-value { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
    .thumb.query { border-color: var(--accent); border-width: 2px; }

    .neighbor-layout { display: flex; gap: 1rem; align-items: flex-start; margin-top: 0.5rem; }
    .neighbor-query { display: flex; flex-direction: column; gap: 0.25rem; font-size: 0.8rem; }
    .neighbor-query:empty { display: none; }

    /* ------------------------------------------------------------ image page */

    .image-layout { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; margin-bottom: 1rem; }
    .image-layout > .card { flex: 1 1 16rem; margin: 0; }
    .figure { margin: 0; flex: none; max-width: 100%; }
    .figure figcaption { font-size: 0.88rem; color: var(--muted); margin-top: 0.35rem; max-width: 384px; overflow-wrap: anywhere; }
    .figure figcaption .status { margin: 0; }
    .figure figcaption strong { color: var(--text); }
    .frame {
      position: relative;
      width: 384px;
      height: 384px;
      max-width: 100%;
      background: var(--track);
      border: 1px solid var(--border);
      border-radius: var(--radius);
      overflow: hidden;
    }
    .frame img { display: block; width: 100%; height: 100%; object-fit: contain; }
    .heatmap-placeholder { position: absolute; inset: 0; }
    .busy-overlay {
      position: absolute;
      inset: 0;
      display: none;
      align-items: center;
      justify-content: center;
      gap: 0.5rem;
      background: color-mix(in srgb, var(--surface) 70%, transparent);
      font-weight: 600;
    }
    .heatmap-figure.busy .busy-overlay { display: flex; }

    .classes .bar-row { grid-template-columns: minmax(6rem, 10rem) 1fr minmax(3.5rem, auto); }

    .total { font-variant-numeric: tabular-nums; margin: 0.4rem 0; }
    .total:empty { display: none; }

    .legend:has(+ .contrib-chart:empty) { display: none; }
    .legend { display: flex; align-items: center; gap: 0.4rem; font-size: 0.8rem; color: var(--muted); margin: 0.25rem 0 0.4rem; }
    .swatch { display: inline-block; width: 0.8rem; height: 0.8rem; border-radius: 2px; margin-left: 0.5rem; }
    .swatch:first-child { margin-left: 0; }
    .swatch.positive { background: var(--positive); }
    .swatch.negative { background: var(--negative); }

    .contrib-chart { list-style: none; margin: 0 0 0.75rem; padding: 0; }
    .contrib-chart:empty { display: none; }
    .contrib-row { display: flex; align-items: stretch; gap: 0.25rem; margin: 2px 0; }
    .contrib-bar {
      flex: 1;
      display: grid;
      grid-template-columns: 1.1rem minmax(6rem, 11rem) 1fr 5.5rem;
      align-items: center;
      gap: 0.6rem;
      text-align: left;
      padding: 0.2rem 0.5rem;
      min-height: 0;
      border: 1px solid transparent;
      background: transparent;
    }
    .contrib-bar:hover:not(:disabled) { border-color: var(--border); background: var(--accent-soft); }
    .contrib-bar.selected { border-color: var(--selected); background: color-mix(in srgb, var(--selected) 14%, transparent); }
    .check { width: 1rem; height: 1rem; border: 1.5px solid var(--muted); border-radius: 3px; display: inline-flex; align-items: center; justify-content: center; font-size: 0.75rem; line-height: 1; }
    .contrib-bar.selected .check { background: var(--selected); border-color: var(--selected); color: #1b1e23; }
    .contrib-bar.selected .check::after { content: "✓"; font-weight: 700; }
    .contrib-name { font-weight: 600; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
    .contrib-track { position: relative; height: 0.9rem; background: var(--track); border-radius: 3px; }
    .contrib-track .zero { position: absolute; left: 50%; top: -2px; bottom: -2px; width: 1px; background: var(--muted); }
    .contrib-fill { position: absolute; top: 0; bottom: 0; border-radius: 2px; }
    .contrib-bar.positive .contrib-fill { background: var(--positive); }
    .contrib-bar.negative .contrib-fill { background: var(--negative); }
    .contrib-value { text-align: right; font-variant-numeric: tabular-nums; font-size: 0.88rem; }
    .contrib-link {
      flex: none;
      display: inline-flex;
      align-items: center;
      justify-content: center;
      width: 2rem;
      border-radius: 6px;
      text-decoration: none;
    }
    .contrib-link:hover { background: var(--accent-soft); }
    .heatmap-controls { margin-top: 0.6rem; }
    .heatmap-controls + .hint { margin: 0.35rem 0 0.5rem; }

    /* ------------------------------------------------------------ spinner */

    .spinner {
      display: inline-block;
      width: 1rem;
      height: 1rem;
      border: 2px solid var(--border);
      border-top-color: var(--accent);
      border-radius: 50%;
      animation: spin 0.8s linear infinite;
      vertical-align: -0.15em;
      margin-right: 0.4rem;
    }
    @keyframes spin { to { transform: rotate(360deg); } }
    @media (prefers-reduced-motion: reduce) {
      .spinner { animation-duration: 2.4s; }
    }

    /* ------------------------------------------------------------ small screens */

    @media (max-width: 640px) {
      main { padding: 0.75rem; }
      .bar-row { grid-template-columns: minmax(5rem, 9rem) 1fr auto; }
      .rank-link { grid-template-columns: 1.8rem minmax(5rem, 1fr) auto; }
      .rank-link .track { display: none; }
      .contrib-bar { grid-template-columns: 1.1rem minmax(4rem, 7rem) 1fr 4.5rem; gap: 0.4rem; }
      .descriptions .bar-row { grid-template-columns: 1fr auto; }
      .descriptions .track { display: none; }
      .frame { width: 100%; height: auto; aspect-ratio: 1; }
    }
    """#
}
