// The index.html page's start (a file, not inline: the pages' Content-Security-Policy
// runs only scripts this server serves).
import { overview } from '/assets/gradcam.js';
overview(document.getElementById('tiles'));
